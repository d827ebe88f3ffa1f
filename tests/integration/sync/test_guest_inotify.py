"""The guest's recursive inotify on a real directory: renames come with their cookie pairing,
and a directory swapped for a symlink is never watched or listed through the link."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydeskd.syncd.inotify import Inotify


def drain(ino: Inotify, settle: float = 0.05) -> list[str]:
    time.sleep(settle)
    return ino.read()


def test_moves_are_paired_by_cookie_and_look_alikes_are_not(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a").write_text("x")
    (tmp_path / "c").write_text("y")
    ino = Inotify(str(tmp_path), lambda rel, is_dir: False)
    try:
        ino.watch_tree()
        os.rename(tmp_path / "a", tmp_path / "sub/b")  # a move
        os.unlink(tmp_path / "c")  # a delete and a create: no move
        (tmp_path / "d").write_text("y")
        changed = drain(ino)
        assert {"a", "sub/b", "c", "d"} <= set(changed)
        assert ino.take_moves() == {"sub/b": "a"}
        assert ino.take_moves() == {}
    finally:
        ino.close()


def test_a_directory_swapped_for_a_link_is_not_watched_through_it(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    (outside / "deep").mkdir(parents=True)
    os.rmdir(root / "d")
    os.symlink(str(outside), root / "d")
    ino = Inotify(str(root), lambda rel, is_dir: False)
    try:
        assert ino.watch_tree() == ["d"]  # the link itself, nothing behind it
        assert ino.watch_tree("d") == []  # a new directory event for "d": refused
        (outside / "deep/secret").write_text("s")
        assert drain(ino) == []  # no watch lives outside the root
    finally:
        ino.close()
