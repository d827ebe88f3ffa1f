"""Name cleaning rules and in-root resolution (openat2 RESOLVE_IN_ROOT)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pydeskd.containerd.archive.confine import Root, clean_name
from pydeskd.containerd.errors import InvalidArgument


@pytest.mark.parametrize(("name", "parts"), [
    ("a/b", ("a", "b")), ("./a/./b/", ("a", "b")), ("/etc/passwd", ("etc", "passwd")),
    ("//a//b", ("a", "b")), ("./", ()), ("/", ()), ("a...b", ("a...b",)), ("..a", ("..a",)),
])
def test_clean_name(name: str, parts: tuple[str, ...]) -> None:
    assert clean_name(name) == parts


@pytest.mark.parametrize("name", [
    "..", "../x", "a/../../x", "a/..", "/../etc", "a\0b", "x" * 256, "a/" * 2100,
])
def test_clean_name_rejects(name: str) -> None:
    with pytest.raises(InvalidArgument):
        clean_name(name)


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink("/", root / "abs")
    os.symlink("../../../..", root / "rel")
    os.symlink(str(tmp_path / "outside"), root / "host")
    with Root(root) as r:
        for link in ("abs", "rel"):
            fd = r.open((link, "inside"), os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert os.path.samestat(os.fstat(fd), os.stat(root / "inside"))
            finally:
                os.close(fd)
        # An absolute link to a host path means root/<that path>: missing, not the host's.
        assert r.open_dir(("host",)) is None


def test_make_parents_refuses_a_dangling_symlink_and_a_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/nowhere", root / "dangling")
    (root / "file").write_text("x")
    with Root(root) as r:
        with pytest.raises(InvalidArgument, match="dangling"):
            r.make_parents(("dangling", "x"))
        with pytest.raises(InvalidArgument, match="not a directory"):
            r.make_parents(("file", "x"))
        os.close(r.make_parents(("new", "deeper")))
    assert (root / "new" / "deeper").is_dir()
    assert not os.path.exists("/nowhere")
