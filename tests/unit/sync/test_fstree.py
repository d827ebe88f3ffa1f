"""Applying changes: atomic, compare-and-swap, no symlink following (the one fstree both sides
run: the host imports the guest's portable module)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from pydeskd.syncd import fstree

COPIES = [fstree]


@pytest.mark.parametrize("m", COPIES)
def test_scan_sees_files_dirs_links_and_skips(m: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o750)
    (tmp_path / "d/f").write_bytes(b"abc")
    os.chmod(tmp_path / "d/f", 0o600)
    os.symlink("../outside", tmp_path / "d/l")
    (tmp_path / "skipme").mkdir()
    (tmp_path / "skipme/x").write_text("x")
    (tmp_path / f"{m.TEMP_PREFIX}half").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    found = m.scan(str(tmp_path), lambda rel, is_dir: rel == "skipme")
    assert set(found) == {"d", "d/f", "d/l"}
    assert found["d"].sig() == ("d", 0o750)
    assert found["d/f"].sig() == ("f", 3, (tmp_path / "d/f").stat().st_mtime_ns, 0o600)
    assert found["d/l"].sig() == ("l", "../outside")


@pytest.mark.parametrize("m", COPIES)
def test_file_in_chunks_appears_only_at_the_end_with_mode_and_mtime(
        m: ModuleType, tmp_path: Path) -> None:
    a = m.Applier(str(tmp_path))
    e = m.Entry("new/dir/f", m.FILE, 6, 1_234_567_890_123_456_789, 0o751)
    assert a.file_chunk(e, None, 0, b"abc", False) is None
    assert not (tmp_path / "new/dir/f").exists()
    assert a.file_chunk(e, None, 3, b"def", True) is None
    st = (tmp_path / "new/dir/f").stat()
    assert (tmp_path / "new/dir/f").read_bytes() == b"abcdef"
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o751, 1_234_567_890_123_456_789)
    assert [p.name for p in (tmp_path / "new/dir").iterdir()] == ["f"]  # no temp left


@pytest.mark.parametrize("m", COPIES)
def test_compare_and_swap_refuses_to_overwrite_an_unexpected_version(
        m: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("theirs")
    a = m.Applier(str(tmp_path))
    e = m.Entry("f", m.FILE, 4, 1, 0o644)
    rejected = a.file_chunk(e, None, 0, b"mine", True)  # we believed it absent
    assert rejected is not None and rejected.current.size == 6 and rejected.temp is None
    assert (tmp_path / "f").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    current = m.lstat_entry(str(tmp_path), "f")
    assert a.file_chunk(e, current, 0, b"mine", True) is None
    assert (tmp_path / "f").read_text() == "mine"
    # deletes and renames too
    assert a.remove("f", current) is not None
    assert a.rename("f", "g", current) is not None
    assert a.remove("f", m.lstat_entry(str(tmp_path), "f")) is None
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("m", COPIES)
def test_keep_rejected_hands_over_the_received_content(m: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("local")
    a = m.Applier(str(tmp_path), keep_rejected=True)
    rejected = a.file_chunk(m.Entry("f", m.FILE, 6, 1, 0o644), None, 0, b"remote", True)
    assert rejected is not None and (tmp_path / rejected.temp).read_bytes() == b"remote"


@pytest.mark.parametrize("m", COPIES)
def test_never_writes_through_a_symlinked_parent_or_outside(m: ModuleType,
                                                            tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(str(outside), root / "link")
    a = m.Applier(str(root))
    with pytest.raises(m.UnsafePath):
        a.file_chunk(m.Entry("link/evil", m.FILE, 1, 1, 0o644), None, 0, b"x", True)
    for bad in ("../x", "/etc/passwd", "a/../../x", "", "a//b"):
        with pytest.raises(m.UnsafePath):
            a.remove(bad, None)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("m", COPIES)
def test_dirs_links_and_a_directory_with_unknown_children_survives(
        m: ModuleType, tmp_path: Path) -> None:
    a = m.Applier(str(tmp_path))
    assert a.mkdir(m.Entry("d", m.DIR, mode=0o700), None) is None
    assert (tmp_path / "d").stat().st_mode & 0o7777 == 0o700
    assert a.mkdir(m.Entry("d", m.DIR, mode=0o755), None) is None  # chmod of an existing dir
    assert (tmp_path / "d").stat().st_mode & 0o7777 == 0o755
    assert a.symlink(m.Entry("d/l", m.LINK, target="/nowhere"), None) is None
    assert os.readlink(tmp_path / "d/l") == "/nowhere"
    assert a.remove("d", m.lstat_entry(str(tmp_path), "d")) is not None  # not empty
    assert (tmp_path / "d/l").is_symlink()


@pytest.mark.parametrize("m", COPIES)
def test_inplace_keeps_the_inode(m: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("old")
    inode = (tmp_path / "f").stat().st_ino
    a = m.Applier(str(tmp_path), inplace=True)
    cur = m.lstat_entry(str(tmp_path), "f")
    assert a.file_chunk(m.Entry("f", m.FILE, 3, 5, 0o600), cur, 0, b"new", True) is None
    st = (tmp_path / "f").stat()
    assert (st.st_ino, st.st_mtime_ns, (tmp_path / "f").read_text()) == (inode, 5, "new")


@pytest.mark.parametrize("m", COPIES)
def test_direct_new_file_is_exclusive(m: ModuleType, tmp_path: Path) -> None:
    a = m.Applier(str(tmp_path))
    e = m.Entry("d/new", m.FILE, 2, 77, 0o640)
    assert a.file_chunk(e, None, 0, b"hi", True, direct=True) is None
    st = (tmp_path / "d/new").stat()
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, 77)
    rejected = a.file_chunk(e, None, 0, b"again", True, direct=True)  # exists now: refused
    assert rejected is not None and rejected.current.size == 2
    assert (tmp_path / "d/new").read_bytes() == b"hi"


@pytest.mark.parametrize("m", COPIES)
def test_umask_zero_mode_comes_from_open(m: ModuleType, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        a = m.Applier(str(tmp_path), umask_zero=True)
        assert a.file_chunk(m.Entry("x", m.FILE, 1, 5, 0o4755), None, 0, b"x", True,
                            direct=True) is None
        assert a.file_chunk(m.Entry("y", m.FILE, 1, 5, 0o600), None, 0, b"y", True) is None
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o7777 == 0o4755
    assert (tmp_path / "y").stat().st_mode & 0o7777 == 0o600
