"""No symlink is followed anywhere in a path, in fstree (the host and the guest run the same
module; review 7, finding 1 and the guest's own reads): a path below a link is absent, and
nothing is written through it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from pydeskd.syncd import fstree

COPIES = [fstree]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """root/link -> outside/ (which holds sub/secret); root/mine is a real file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub/secret").write_text("secret")
    os.chmod(outside / "sub", 0o700)
    root.mkdir()
    os.symlink(str(outside), root / "link")
    (root / "mine").write_text("mine")
    return root, outside


def state(outside: Path) -> list[tuple[str, int, str]]:
    return [(str(p.relative_to(outside)), p.lstat().st_mode,
             p.read_text() if p.is_file() else "") for p in sorted(outside.rglob("*"))]


@pytest.mark.parametrize("m", COPIES)
def test_reads_below_a_link_find_nothing(m: ModuleType, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert m.lstat_entry(str(root), "link/sub") is None
    assert m.lstat_entry(str(root), "link/sub/secret") is None
    assert m.lstat_entry(str(root), "mine/x") is None  # below a file: absent too
    assert m.lstat_entry(str(root), "link").kind == m.LINK
    with pytest.raises(OSError):
        m.open_file(str(root), "link/sub/secret")
    with pytest.raises(OSError):
        list(m.read_chunks(str(root), m.Entry("link/sub/secret", m.FILE, 6), 1024))
    with pytest.raises(OSError):
        m.open_file(str(root), "link")  # the link itself is not opened either
    assert set(m.scan(str(root))) == {"link", "mine"}
    assert list(m.walk(str(root), "link", None)) == []
    with pytest.raises(m.UnsafePath):
        m.lstat_entry(str(root), "../outside/sub")


@pytest.mark.parametrize("m", COPIES)
def test_writes_below_a_link_are_refused(m: ModuleType, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    before = state(outside)
    secret = m.entry_from_stat("link/sub/secret", os.lstat(outside / "sub/secret"))
    sub = m.entry_from_stat("link/sub", os.lstat(outside / "sub"))
    a = m.Applier(str(root))
    assert a.remove("link/sub/secret", secret) is None  # absent: nothing to delete
    mine = m.lstat_entry(str(root), "mine")
    attempts: list[Callable[[], object]] = [
        lambda: a.rename("link/sub/secret", "stolen", secret),
        lambda: a.mkdir(sub._replace(mode=0o777), sub),  # no chmod through the link
        lambda: a.mkdir(m.Entry("link/new", m.DIR, mode=0o755), None),
        lambda: a.symlink(m.Entry("link/sub/secret", m.LINK, target="x"), secret),
        lambda: a.symlink(m.Entry("link/sub/new", m.LINK, target="x"), None),
        lambda: a.file_chunk(m.Entry("link/sub/secret", m.FILE, 1, 1, 0o644), secret, 0,
                             b"x", True),
        lambda: a.file_chunk(m.Entry("link/sub/new", m.FILE, 1, 1, 0o644), None, 0, b"x", True,
                             direct=True),
        lambda: a.rename("mine", "link/mine", mine),
    ]
    for attempt in attempts:
        with contextlib.suppress(m.UnsafePath):  # refused outright, or:
            assert attempt() is not None  # rejected: not what the sender expected there
    assert state(outside) == before
    assert (root / "mine").read_text() == "mine"


@pytest.mark.parametrize("m", COPIES)
def test_a_directory_swapped_for_a_link_during_a_walk_is_not_followed(
        m: ModuleType, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "d").mkdir()

    def swap(rel: str, is_dir: bool) -> bool:
        if rel == "d" and is_dir:  # listed as a directory, a link when the walk goes in
            os.rmdir(root / "d")
            os.symlink(str(outside), root / "d")
        return False

    assert {e.path for e in m.walk(str(root), "", swap)} == {"link", "mine", "d"}


@pytest.mark.parametrize("m", COPIES)
def test_moves_and_installs_never_replace_an_existing_name(
        m: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    a = m.Applier(str(tmp_path), keep_rejected=True)
    rejected = a.file_chunk(m.Entry("c", m.FILE, 3, 1, 0o644), m.Entry("x", m.LINK, target="\0"),
                            0, b"new", True)
    assert rejected is not None and rejected.temp is not None
    with pytest.raises(FileExistsError):
        a.install(rejected.temp, "b", None)  # "b" was believed free: it is not replaced
    assert (tmp_path / "b").read_text() == "b"
    a.install(rejected.temp, "c", None)
    assert (tmp_path / "c").read_text() == "new"
    assert a.rename("a", "b", m.lstat_entry(str(tmp_path), "a")) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]
