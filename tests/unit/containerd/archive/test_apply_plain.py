"""Applying layers in plain mode (no overlay, no root): entry types, whiteouts, confinement.

Owners are the test's own uid/gid so this runs without root; ownership of other ids, devices
and trusted.* xattrs are in tests/integration/snapshots.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pydeskd.containerd.archive.apply import apply_tar
from pydeskd.containerd.archive.target import layer_target
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.snapshots import Mount
from tests.unit.containerd.archive.layers import (
    Entry,
    directory,
    file,
    hardlink,
    layer,
    opaque,
    symlink,
    tree,
    whiteout,
)

ME = {"uid": os.getuid(), "gid": os.getgid()}


def apply(root: Path, *entries: Entry) -> None:
    apply_tar(io.BytesIO(layer(*entries)), str(root))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sentinel tree next to the root: no test may change it."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("secret")
    os.chmod(path / "secret", 0o600)
    (path / "dir").mkdir()
    return path


def test_entry_types_modes_and_times(root: Path) -> None:
    apply(root,
          directory("d", 0o1777, mtime=1_000_000, **ME),
          file("d/f", b"data", 0o4755, mtime=2_000_000, **ME),
          file("d/g", b"", 0o2640, **ME),
          symlink("d/l", "f", mtime=3_000_000, **ME),
          hardlink("d/h", "d/f", **ME),
          Entry("d/p", tarfile.FIFOTYPE, mode=0o640, **ME))  # type: ignore[arg-type]
    d = root / "d"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o1777
    assert os.stat(d).st_mtime == 1_000_000  # set after its content was written
    assert (d / "f").read_bytes() == b"data"
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(d / "g").st_mode) == 0o2640
    assert os.stat(d / "f").st_mtime == 2_000_000
    assert os.readlink(d / "l") == "f"
    assert os.lstat(d / "l").st_mtime == 3_000_000
    assert os.stat(d / "h").st_ino == os.stat(d / "f").st_ino
    assert stat.S_ISFIFO(os.stat(d / "p").st_mode)
    assert stat.S_IMODE(os.stat(d / "p").st_mode) == 0o640


def test_missing_parents_are_created(root: Path) -> None:
    apply(root, file("a/b/c", b"x", **ME))
    assert (root / "a/b/c").read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(root / "a/b").st_mode) == 0o755


def test_replacing_entries_of_another_type(root: Path) -> None:
    apply(root, directory("x", **ME), file("x/inner", b"1", **ME), file("y", b"2", **ME),
          symlink("z", "/etc", **ME), directory("keep", 0o700, **ME), file("keep/a", **ME))
    apply(root, file("x", b"now a file", **ME), directory("y", **ME), file("z", b"3", **ME),
          directory("keep", 0o750, **ME))
    assert (root / "x").read_bytes() == b"now a file"
    assert (root / "y").is_dir()
    assert not (root / "z").is_symlink() and (root / "z").read_bytes() == b"3"
    assert (root / "keep/a").exists()  # a directory over a directory merges
    assert stat.S_IMODE(os.stat(root / "keep").st_mode) == 0o750


def test_whiteouts_delete_lower_entries(root: Path) -> None:
    apply(root, file("a/f", b"1", **ME), directory("a/d", **ME), file("a/d/x", **ME),
          file("a/keep", **ME))
    apply(root, whiteout("a/f"), whiteout("a/d"), whiteout("a/missing"), whiteout("nodir/x"))
    assert sorted(os.listdir(root / "a")) == ["keep"]
    assert not (root / "nodir").exists()  # a whiteout never creates parents in plain mode


def test_opaque_empties_the_directory_but_keeps_this_layers_entries(root: Path) -> None:
    apply(root, file("a/old1", **ME), directory("a/old2", **ME), file("a/old2/x", **ME))
    apply(root, directory("a", **ME), file("a/new", b"n", **ME), file("a/sub/new2", **ME),
          opaque("a"))
    assert sorted(os.listdir(root / "a")) == ["new", "sub"]


def test_aufs_metadata_is_skipped(root: Path) -> None:
    apply(root, file(".wh..wh.plnk/123.456", b"x", **ME), file("a", **ME))
    assert sorted(os.listdir(root)) == ["a"]


def test_hardlink_to_an_entry_of_an_earlier_layer(root: Path) -> None:
    apply(root, file("bin/busybox", b"bb", 0o755, **ME))
    apply(root, hardlink("bin/sh", "bin/busybox", **ME))
    assert os.stat(root / "bin/sh").st_ino == os.stat(root / "bin/busybox").st_ino


def test_hardlink_to_a_missing_target_is_rejected(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="not found"):
        apply(root, hardlink("a", "nothing", **ME))


def test_diff_id_result_size_and_unknown_types(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="unsupported type"):
        apply(root, Entry("weird", b"V", **ME))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="malformed"):
        apply_tar(io.BytesIO(b"\x01" * 1024), str(root))


def test_user_xattrs_are_set_and_overlay_ones_dropped(root: Path) -> None:
    pax = {"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.trusted.overlay.opaque": "y",
           "SCHILY.xattr.security.selinux": "system_u:object_r:etc_t:s0"}
    apply(root, file("f", b"", pax=pax, **ME))
    assert os.getxattr(root / "f", "user.note") == b"hello"
    names = os.listxattr(root / "f")
    assert "trusted.overlay.opaque" not in names
    assert "security.selinux" not in names


# --- confinement ----------------------------------------------------------------------------


def check_unchanged(outside: Path, before: dict[str, object]) -> None:
    assert tree(outside) == before


def test_dotdot_names_are_rejected(root: Path, outside: Path) -> None:
    before = tree(outside)
    for entry in (file("../outside/evil", **ME), file("a/../../outside/evil", **ME),
                  symlink("../outside/link", "/", **ME), directory("../outside/d2", **ME),
                  hardlink("../outside/h", "a", **ME), whiteout("../outside/secret"),
                  file("a/.wh...", **ME)):
        with pytest.raises(InvalidArgument):
            apply(root, file("a", **ME), entry)
    check_unchanged(outside, before)


def test_absolute_names_are_confined(root: Path, outside: Path) -> None:
    before = tree(outside)
    apply(root, file(f"{outside}/secret", b"pwned", **ME))
    assert (root / str(outside).lstrip("/") / "secret").read_bytes() == b"pwned"
    check_unchanged(outside, before)


@pytest.mark.parametrize("target", ["ABS", "../../../../../../../../ABS", "ABS/../outside/."])
def test_symlink_parent_then_write_through_it_stays_inside(root: Path, outside: Path,
                                                          target: str) -> None:
    before = tree(outside)
    target = target.replace("ABS", str(outside))
    # The parent is followed inside the root, where it does not exist: rejected, not created.
    with pytest.raises(InvalidArgument, match="dangling"):
        apply(root, symlink("escape", target, **ME), file("escape/secret", b"pwned", **ME))
    # Once the path exists inside the root, the write lands there.
    (root / str(outside).lstrip("/")).mkdir(parents=True)
    apply(root, file("escape/secret", b"inside", **ME))
    assert (root / str(outside).lstrip("/") / "secret").read_bytes() == b"inside"
    check_unchanged(outside, before)


def test_a_file_entry_replaces_a_symlink_and_never_writes_through_it(
        root: Path, outside: Path) -> None:
    before = tree(outside)
    apply(root, symlink("f", str(outside / "secret"), **ME), file("f", b"pwned", 0o777, **ME))
    assert not (root / "f").is_symlink()
    check_unchanged(outside, before)


def test_no_chmod_chown_or_utime_through_a_symlink(root: Path, outside: Path) -> None:
    """CVE-2021-32760: metadata of a symlink entry never reaches its target."""
    before = tree(outside)
    apply(root, symlink("s", str(outside / "secret"), mtime=5, **ME),
          symlink("d", str(outside / "dir"), **ME))
    apply(root, directory("d", 0o777, **ME))  # replaces the symlink, does not chmod its target
    check_unchanged(outside, before)


def test_hardlinks_to_outside_are_confined_or_rejected(root: Path, outside: Path) -> None:
    before = tree(outside)
    with pytest.raises(InvalidArgument):
        apply(root, hardlink("h", "../outside/secret", **ME))
    with pytest.raises(InvalidArgument, match="not found"):
        apply(root, hardlink("h", str(outside / "secret"), **ME))
    # Through a symlinked parent: resolved inside the root, where there is no such file.
    with pytest.raises(InvalidArgument):
        apply(root, symlink("p", str(outside), **ME), hardlink("h", "p/secret", **ME))
    # A hardlink to a symlink pointing outside links the symlink itself (inert data).
    apply(root, symlink("s", str(outside / "secret"), **ME), hardlink("h", "s", **ME))
    assert os.readlink(root / "h") == str(outside / "secret")
    assert os.lstat(root / "h").st_ino == os.lstat(root / "s").st_ino
    apply(root, file("h", b"pwned", **ME))  # replacing it does not write through it
    check_unchanged(outside, before)


def test_long_names(root: Path) -> None:
    deep = "/".join(["d" * 200] * 10)
    apply(root, file(f"{deep}/f", b"x", **ME))  # PAX path of 2 KiB: fine
    assert (root / deep / "f").read_bytes() == b"x"
    with pytest.raises(InvalidArgument):
        apply(root, file("n" * 300, **ME))


def test_layer_target_reads_mounts() -> None:
    bind = Mount("bind", "/s/1/fs", options=("rw", "rbind"))
    assert layer_target([bind]) == ("/s/1/fs", False, [])
    overlay = Mount("overlay", "overlay", options=("workdir=/s/3/work", "upperdir=/s/3/fs",
                                           "lowerdir=/s/2/fs:/s/1/fs"))
    assert layer_target([overlay]) == ("/s/3/fs", True, ["/s/2/fs", "/s/1/fs"])
    for bad in ([], [Mount("bind", "/x", options=("ro", "rbind"))], [Mount("tmpfs", "tmpfs")],
                [Mount("overlay", "overlay", options=("lowerdir=/a:/b",))]):
        with pytest.raises(InvalidArgument):
            layer_target(bad)


def test_directory_modes_are_set_after_their_content(root: Path) -> None:
    """A read-only directory still receives its entries; a repeated directory's last entry wins."""
    apply(root, directory("ro", 0o555, **ME), file("ro/f", b"x", **ME),
          directory("ro/sub", 0o500, **ME), file("ro/sub/g", b"y", **ME),
          directory("twice", 0o700, mtime=10, **ME), directory("twice", 0o751, mtime=20, **ME))
    assert (root / "ro/sub/g").read_bytes() == b"y"
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(root / "ro/sub").st_mode) == 0o500
    assert stat.S_IMODE(os.stat(root / "twice").st_mode) == 0o751
    assert os.stat(root / "twice").st_mtime == 20
    os.chmod(root / "ro/sub", 0o700)  # let tmp_path's cleanup in without root
    os.chmod(root / "ro", 0o700)


def test_symlink_loops_are_rejected(root: Path, outside: Path) -> None:
    before = tree(outside)
    with pytest.raises(InvalidArgument, match="symlinks"):
        apply(root, symlink("a", "b", **ME), symlink("b", "a", **ME), file("a/x", b"x", **ME))
    with pytest.raises(InvalidArgument, match="symlinks"):
        apply(root, symlink("self", "self", **ME), hardlink("h", "self/x", **ME))
    check_unchanged(outside, before)


def test_a_directory_made_through_a_symlinked_parent_gets_its_mode_and_time(root: Path) -> None:
    """``lib -> usr/lib``, then ``lib/sub/``: the directory is ``usr/lib/sub`` and takes the
    entry's mode and mtime (it once stayed 0700, as created, because the delayed metadata pass
    refused to resolve through the symlink)."""
    apply(root, directory("usr", **ME), directory("usr/lib", **ME), symlink("lib", "usr/lib", **ME),
          directory("lib/sub", 0o755, mtime=1_234_567, **ME), file("lib/sub/f", b"x", **ME))
    st = os.lstat(root / "usr/lib/sub")
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert st.st_mtime == 1_234_567
    assert (root / "usr/lib/sub/f").read_bytes() == b"x"


def test_a_directory_named_twice_through_a_symlink_takes_its_last_entry(root: Path) -> None:
    apply(root, directory("usr", **ME), directory("usr/lib", **ME), symlink("lib", "usr/lib", **ME),
          directory("usr/lib/sub", 0o750, mtime=10, **ME),
          directory("lib/sub", 0o711, mtime=20, **ME))
    st = os.lstat(root / "usr/lib/sub")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o711, 20)
    apply(root, directory("lib/sub", 0o750, mtime=30, **ME),
          directory("usr/lib/sub", 0o755, mtime=40, **ME))
    st = os.lstat(root / "usr/lib/sub")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o755, 40)


def test_a_directory_replaced_later_in_the_layer_keeps_the_replacement(root: Path) -> None:
    apply(root, directory("d", 0o751, mtime=10, **ME), whiteout("d"),
          directory("d", 0o700, mtime=20, **ME), symlink("s", "d", **ME),
          directory("e", 0o755, **ME), whiteout("e"), symlink("e", "d", **ME))
    st = os.lstat(root / "d")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o700, 20)
    assert os.path.islink(root / "e")


def test_user_xattr_on_a_fifo_is_skipped_not_fatal(root: Path) -> None:
    """The kernel refuses ``user.*`` on a fifo or device node with EPERM, as root too; moby skips
    it (and ENOTSUP), so the layer applies."""
    pax = {"SCHILY.xattr.user.note": "hello"}
    apply(root, Entry("p", tarfile.FIFOTYPE, mode=0o644, pax=pax, **ME), file("after", b"a", **ME))
    assert stat.S_ISFIFO(os.lstat(root / "p").st_mode)
    assert (root / "after").read_bytes() == b"a"


@pytest.mark.parametrize(("code", "fatal"), [(errno.EPERM, False), (errno.ENOTSUP, False),
                                             (errno.ENOSPC, True), (errno.E2BIG, True)])
def test_which_xattr_errors_are_fatal(root: Path, monkeypatch: pytest.MonkeyPatch, code: int,
                                      fatal: bool) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "geteuid", lambda: 0)  # as root: only these rules apply
    monkeypatch.setattr(os, "setxattr", refuse)
    entry = file("f", b"x", pax={"SCHILY.xattr.security.capability": "\x01"}, **ME)
    if fatal:
        with pytest.raises(OSError) as info:
            apply(root, entry)
        assert info.value.errno == code
    else:
        apply(root, entry)
        assert (root / "f").read_bytes() == b"x"
