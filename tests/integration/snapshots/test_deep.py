"""Review findings on real overlay (root): a 1500-deep layer is mounted, removed and cleaned up;
the image service opens over a deep leftover; a mount point inside a leftover is never
emptied; ``user.*`` xattrs on device nodes and fifos do not reject a layer; a directory made
through a symlinked parent gets its mode in overlay mode too.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pydeskd.containerd.archive.apply import apply_tar
from pydeskd.containerd.service import ImageService
from pydeskd.containerd.snapshots.removal import remove_path
from pydeskd.containerd.stores import SNAPSHOTTER
from tests.integration.snapshots.conftest import Env
from tests.unit.containerd.archive.layers import Entry, directory, file, layer, symlink

DEEP_NAME = "a/" * 1500 + "f"
DEEP = layer(file(DEEP_NAME, b"deep"))
BASE = layer(directory("usr"), directory("usr/lib"), file("usr/lib/libc", b"c"))


def read_at(root: Path, name: str) -> bytes:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        f = os.open(name, os.O_RDONLY, dir_fd=fd)
        try:
            return os.read(f, 100)
        finally:
            os.close(f)
    finally:
        os.close(fd)


def test_a_deep_layer_on_overlay_is_mounted_removed_and_cleaned_up(env: Env) -> None:
    top = env.unpack([BASE, DEEP])
    with env.stack:
        assert read_at(env.view(top), DEEP_NAME) == b"deep"
    names: list[str] = []
    env.sn.walk(lambda info: names.append(info.name))
    env.sn.remove(top)
    env.sn.remove(names[0] if names[0] != top else names[1])
    snapshots = env.tmp / "snapshots" / "snapshots"
    assert os.listdir(snapshots) == []
    (snapshots / "rm-7-deadbeef" / "fs").mkdir(parents=True)  # a remove cut short by a crash
    apply_tar(io.BytesIO(DEEP), str(snapshots / "rm-7-deadbeef" / "fs"))
    env.sn.cleanup()
    assert os.listdir(snapshots) == []


def test_the_image_service_opens_over_a_deep_leftover(tmp_path: Path) -> None:
    ImageService(tmp_path / "images").close()
    snapshots = tmp_path / "images" / "snapshots" / SNAPSHOTTER / "snapshots"
    for leftover in ("rm-3-deadbeef", "42"):
        (snapshots / leftover / "fs").mkdir(parents=True)
        apply_tar(io.BytesIO(DEEP), str(snapshots / leftover / "fs"))
    with ImageService(tmp_path / "images"):
        assert os.listdir(snapshots) == []


_libc = ctypes.CDLL(None, use_errno=True)


def test_a_mount_point_inside_a_leftover_is_never_emptied(env: Env) -> None:
    snapshots = env.tmp / "snapshots" / "snapshots"
    mnt = snapshots / "rm-9-deadbeef" / "fs" / "mnt"
    mnt.mkdir(parents=True)
    (snapshots / "rm-8-deadbeef" / "fs").mkdir(parents=True)
    assert _libc.mount(b"tmpfs", str(mnt).encode(), b"tmpfs", 0, None) == 0, \
        os.strerror(ctypes.get_errno())
    try:
        (mnt / "precious").write_text("x")
        with pytest.raises(OSError) as err:
            remove_path(snapshots / "rm-9-deadbeef")
        assert err.value.errno == errno.EXDEV
        env.sn.cleanup()  # logs this one, removes the other
        assert sorted(os.listdir(snapshots)) == ["rm-9-deadbeef"]
        assert (mnt / "precious").read_text() == "x"
    finally:
        _libc.umount2(str(mnt).encode(), 2)
    env.sn.cleanup()
    assert os.listdir(snapshots) == []


def test_user_xattrs_on_device_nodes_and_fifos_are_skipped(env: Env) -> None:
    pax = {"SCHILY.xattr.user.note": "x"}
    nodes = layer(Entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3, pax=pax),
                  Entry("run/fifo", tarfile.FIFOTYPE, mode=0o600, pax=pax),
                  file("etc/hostname", b"h", pax=pax))
    for tars in ([nodes], [BASE, nodes]):  # plain mode, then overlay mode
        root = env.view(env.unpack(tars))
        assert stat.S_ISCHR(os.lstat(root / "dev/null").st_mode)
        assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
        assert os.getxattr(root / "etc/hostname", "user.note") == b"x"


def test_a_directory_made_through_a_symlinked_parent_in_overlay_mode(env: Env) -> None:
    top = env.unpack([BASE, layer(directory("usr"), directory("usr/lib"),
                                  symlink("lib", "usr/lib"),
                                  directory("lib/sub", 0o755, mtime=1_234_567),
                                  file("lib/sub/f", b"x"))])
    st = os.lstat(env.view(top) / "usr/lib/sub")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o755, 1_234_567)
