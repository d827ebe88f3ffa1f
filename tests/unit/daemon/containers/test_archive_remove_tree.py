"""The container store removes trees deeper than Python's recursion limit (a container may make
one; ``shutil.rmtree`` raised RecursionError on them)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydeskd.daemon.containers.store import remove_tree


def _deep(top: Path, depth: int) -> None:
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as out:
            out.write("x")
    finally:
        os.close(fd)


def test_remove_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    top = tmp_path / "bundle"
    _deep(top, sys.getrecursionlimit() + 500)
    remove_tree(top)
    assert not top.exists()


def test_remove_tree_leaves_a_symlink_target_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    top = tmp_path / "bundle"
    top.mkdir()
    (top / "link").symlink_to(outside)
    remove_tree(top)
    assert not top.exists()
    assert (outside / "keep").read_text() == "k"


def test_remove_tree_of_a_missing_path_is_quiet(tmp_path: Path) -> None:
    remove_tree(tmp_path / "absent")
