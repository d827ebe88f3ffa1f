"""A hostile layer 1500 directories deep: applied, committed, removed, and cleaned up after a
crash, without RecursionError; one leftover that cannot be removed does not stop ``cleanup``.

(Before the iterative removal, every removal of such a snapshot raised RecursionError, and so
did ``cleanup``, which the image service runs when it opens.)
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from pydeskd.containerd.archive.apply import apply_tar
from pydeskd.containerd.snapshots import overlay
from pydeskd.containerd.snapshots.overlay import OverlaySnapshotter
from tests.unit.containerd.archive.layers import directory, file, layer, symlink
from tests.unit.containerd.snapshots.test_snapshotter import upper

DEEP = layer(file("a/" * 1500 + "f", b"deep"))


def test_a_1500_deep_layer_is_applied_committed_and_removed(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path / "s")
    root = upper(sn.prepare("extract"))
    apply_tar(io.BytesIO(DEEP), str(root))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.stat("a/" * 1500 + "f", dir_fd=fd).st_size == 4
    finally:
        os.close(fd)
    sn.commit("deep", "extract")
    sn.remove("deep")
    assert os.listdir(tmp_path / "s" / "snapshots") == []


def test_cleanup_removes_a_deep_leftover_of_a_crash(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path / "s")
    d = tmp_path / "s" / "snapshots"
    for leftover in ("rm-1-deadbeef", "77"):  # a remove and a create cut short by a crash
        (d / leftover / "fs").mkdir(parents=True)
        apply_tar(io.BytesIO(DEEP), str(d / leftover / "fs"))
    sn.cleanup()
    assert os.listdir(d) == []


def test_one_leftover_that_cannot_be_removed_does_not_stop_cleanup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    sn = OverlaySnapshotter(tmp_path / "s")
    d = tmp_path / "s" / "snapshots"
    for leftover in ("rm-1-aaaaaaaa", "rm-2-bbbbbbbb", "rm-3-cccccccc"):
        (d / leftover / "fs").mkdir(parents=True)
    real = overlay.remove_path

    def failing(path: str | os.PathLike[str]) -> None:
        if os.fspath(path).endswith("rm-2-bbbbbbbb"):
            raise RuntimeError("cannot remove this one")
        real(path)

    monkeypatch.setattr(overlay, "remove_path", failing)
    with caplog.at_level(logging.ERROR, logger=overlay.__name__):
        sn.cleanup()
    assert os.listdir(d) == ["rm-2-bbbbbbbb"]
    assert "rm-2-bbbbbbbb" in caplog.text
    monkeypatch.setattr(overlay, "remove_path", real)
    sn.cleanup()  # the next one gets it
    assert os.listdir(d) == []


def test_a_layer_deeper_than_path_max_through_a_symlink_is_committed_and_removed(
        tmp_path: Path) -> None:
    """A name is at most 4095 bytes, but a symlinked parent continues below it: 3000 levels,
    paths of 6000 bytes. Measuring it at commit once failed (path strings: ENAMETOOLONG)."""
    sn = OverlaySnapshotter(tmp_path / "s")
    root = upper(sn.prepare("extract"))
    apply_tar(io.BytesIO(layer(directory("a/" * 2000), symlink("l", "a/" * 2000),
                               file("l/" + "b/" * 1000 + "f", b"x"))), str(root))
    sn.commit("deeper", "extract")
    assert sn.usage("deeper").inodes == 2000 + 1 + 1000 + 1  # directories, symlink, file
    sn.remove("deeper")
    assert os.listdir(tmp_path / "s" / "snapshots") == []
