"""tmpcopyup's tree copy: contents, modes, links and times kept (no root needed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pydeskd.runtime import copyup
from pydeskd.runtime import syscalls as sc
from pydeskd.runtime.copyup import copy_tree, mount_with_copy_up
from pydeskd.runtime.syscalls import RecordingSyscalls


def test_copy_tree_keeps_files_dirs_links_fifos_modes_and_times(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub").chmod(0o750)
    (src / "file").write_text("data")
    (src / "file").chmod(0o4711)
    os.utime(src / "file", ns=(1_000_000_000, 2_000_000_000))
    (src / "link").symlink_to("/absolute/elsewhere")
    os.mkfifo(src / "sub" / "fifo")
    dst = tmp_path / "dst"
    dst.mkdir()
    copy_tree(str(src), str(dst))
    assert (dst / "file").read_text() == "data"
    assert stat.S_IMODE((dst / "file").stat().st_mode) == 0o4711
    assert (dst / "file").stat().st_mtime_ns == 2_000_000_000
    assert stat.S_IMODE((dst / "sub").stat().st_mode) == 0o750
    assert os.readlink(dst / "link") == "/absolute/elsewhere"
    assert stat.S_ISFIFO((dst / "sub" / "fifo").lstat().st_mode)


def test_copy_up_mounts_on_a_staging_dir_then_moves_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "etc"
    target.mkdir()
    copies: list[tuple[str, str]] = []
    # The tmpfs is only recorded, so the copy (into the real staging dir) is recorded too.
    monkeypatch.setattr(copyup, "copy_tree", lambda src, dst: copies.append((src, dst)))
    sys = RecordingSyscalls()
    mount_with_copy_up(sys, "tmpfs", str(target), sc.MS_NOSUID, "size=1m")
    (_, src, staging, fstype, flags, data), move = sys.calls
    assert copies == [(str(target), staging)]
    assert (src, fstype, flags, data) == ("tmpfs", "tmpfs", sc.MS_NOSUID, "size=1m")
    assert move == ("mount", staging, str(target), "", sc.MS_MOVE, "")
    assert isinstance(staging, str) and not os.path.exists(staging)  # removed again
