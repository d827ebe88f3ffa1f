"""The mount seam for real (root): binds, read-only remounts, rollback, unstacking."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pydeskd.containerd.snapshots import Mount
from pydeskd.containerd.snapshots.mount import mounted, perform, unmount


def is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)


def test_read_only_bind_is_read_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    with mounted([Mount("bind", str(src), options=("ro", "rbind"))]) as where:
        assert (where / "f").read_text() == "x"
        with pytest.raises(OSError) as err:
            (where / "g").write_text("y")
        assert err.value.errno == errno.EROFS
    assert not is_mountpoint(where)
    with mounted([Mount("bind", str(src), options=("rw", "rbind"))]) as where:
        (where / "g").write_text("y")
    assert (src / "g").read_text() == "y"


def test_a_failing_list_is_undone(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(OSError):
        perform([Mount("tmpfs", "tmpfs", options=("size=1m",)),
                 Mount("bind", str(tmp_path / "missing"), options=("rbind",))], target)
    assert not is_mountpoint(target)


def test_unmount_unstacks_every_mount(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    tmpfs = Mount("tmpfs", "tmpfs", options=("size=1m",))
    perform([tmpfs, tmpfs], target)
    try:
        assert is_mountpoint(target)
    finally:
        unmount(target)
    assert not is_mountpoint(target)
