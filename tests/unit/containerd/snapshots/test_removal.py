"""Tree removal and walking: any depth without recursion, bounded fds, symlinks never followed,
0555/0000 directories."""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.containerd.snapshots import removal, walk
from pydeskd.containerd.snapshots.removal import empty_dir, remove_entry, remove_path
from pydeskd.containerd.snapshots.walk import stats_below


def deep_tree(top: Path, depth: int) -> None:
    """``top/a/a/.../a/f`` with ``depth`` directories below ``top``, built through fds (a path
    that deep is longer than PATH_MAX)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("a", dir_fd=fd)
            child = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        os.symlink("/", "up", dir_fd=fd)
    finally:
        os.close(fd)


@pytest.fixture
def few_fds() -> Iterator[None]:
    """RLIMIT_NOFILE a little above what is open now: a removal holding one fd per level of a
    deep tree would run out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + removal._FD_DEPTH + 32, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_tree_deeper_than_the_recursion_limit_and_path_max_is_removed(
        tmp_path: Path, few_fds: None) -> None:
    deep_tree(tmp_path / "t", 3000)  # 3000 > sys.getrecursionlimit(), 6000 bytes > PATH_MAX
    remove_path(tmp_path / "t")
    assert os.listdir(tmp_path) == []


def test_wide_and_deep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(removal, "_FD_DEPTH", 2)  # ancestors re-opened through ".." a lot
    top = tmp_path / "t"
    for path in ("a/b/c/d/e", "a/b/c/x/y", "a/b/z", "a/q/r/s/t/u", "k"):
        (top / path).mkdir(parents=True)
        (top / path / "file").write_text(path)
    remove_path(top)
    assert os.listdir(tmp_path) == []


def test_symlinks_are_removed_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "keep").write_text("x")
    (outside / "file").write_text("y")
    top = tmp_path / "t"
    (top / "sub").mkdir(parents=True)
    os.symlink(outside / "dir", top / "sub" / "to-dir")
    os.symlink(outside / "file", top / "to-file")
    os.symlink(outside, tmp_path / "link")
    remove_path(top)
    remove_path(tmp_path / "link")  # the symlink itself goes, not what it points at
    assert sorted(os.listdir(tmp_path)) == ["outside"]
    assert (outside / "dir" / "keep").read_text() == "x"
    assert (outside / "file").read_text() == "y"


def test_read_only_and_unreadable_directories(tmp_path: Path) -> None:
    top = tmp_path / "t"
    (top / "ro" / "none").mkdir(parents=True)
    (top / "ro" / "none" / "f").write_text("x")
    (top / "ro" / "g").write_text("y")
    os.chmod(top / "ro" / "none", 0)
    os.chmod(top / "ro", 0o555)
    os.chmod(top, 0o500)
    remove_path(top)
    assert os.listdir(tmp_path) == []


def test_remove_entry_and_empty_dir_keep(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "keep").write_text("k")
    (tmp_path / "d" / "x").write_text("x")
    fd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        empty_dir(fd, frozenset({"keep"}))
        assert os.listdir(fd) == ["keep"]
        remove_entry(fd, "keep")
        remove_entry(fd, "missing")
        assert os.listdir(fd) == []
    finally:
        os.close(fd)
    remove_path(tmp_path / "missing" / "deeper")


def test_a_directory_that_keeps_refilling_is_an_error(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t").mkdir()
    real_rmdir = os.rmdir

    def refill(name: str, *, dir_fd: int) -> None:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)
        try:
            os.close(os.open("new", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        finally:
            os.close(fd)
        real_rmdir(name, dir_fd=dir_fd)

    monkeypatch.setattr(os, "rmdir", refill)
    with pytest.raises(OSError, match="not empty"):
        remove_path(tmp_path / "t")


def test_stats_below_walks_any_depth_with_few_fds(tmp_path: Path, few_fds: None) -> None:
    deep_tree(tmp_path / "t", 3000)
    stats = list(stats_below(tmp_path / "t"))
    assert len(stats) == 3000 + 2  # the directories, then f and the symlink at the bottom
    assert sum(stat.S_ISLNK(st.st_mode) for st in stats) == 1  # listed, never followed
    remove_path(tmp_path / "t")


def test_stats_below_reopens_ancestors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walk, "_FD_DEPTH", 1)
    for path in ("a/b/c/d", "a/b/x", "a/q/r/s", "k"):
        (tmp_path / "t" / path).mkdir(parents=True)
        (tmp_path / "t" / path / "file").write_text(path)
    names = [str(st.st_ino) for st in stats_below(tmp_path / "t")]
    expected = {str(os.lstat(p).st_ino) for p in (tmp_path / "t").rglob("*")}
    assert set(names) == expected and len(names) == len(expected)
