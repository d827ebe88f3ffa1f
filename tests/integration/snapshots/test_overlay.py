"""The overlay snapshotter for real (root): unpacked stacks mounted and read back."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument, NotFound
from pydeskd.containerd.oci import ImageConfig, Manifest
from pydeskd.containerd.progress import Collector
from pydeskd.containerd.snapshots import Kind
from pydeskd.containerd.snapshots.overlay import OverlaySnapshotter
from pydeskd.containerd.unpack import chain_ids, unpack_layers
from tests.integration.snapshots.conftest import Env
from tests.unit.containerd.archive.layers import (
    Entry,
    directory,
    file,
    hardlink,
    image,
    layer,
    opaque,
    sha256,
    symlink,
    whiteout,
)

BASE = layer(directory("etc"), file("etc/a", b"a"), file("etc/b", b"b"),
             directory("opt/x"), file("opt/x/old", b"old"), directory("opt/x/sub"),
             file("opt/x/sub/deep", b"deep"), directory("tmp", 0o1777, uid=5, gid=6),
             file("bin/busybox", b"BB", 0o755), symlink("bin/sh", "busybox"))
MIDDLE = layer(whiteout("etc/a"), file("etc/c", b"c"), directory("opt/x"), opaque("opt/x"),
               file("opt/x/new", b"new"), file("tmp/added", b"t"),
               hardlink("bin/ls", "bin/busybox"))
TOP = layer(file("etc/b", b"b3"), whiteout("bin/sh"), directory("etc/a"), file("etc/a/again"))


def test_three_layers_merge_as_the_image_spec_says(env: Env) -> None:
    top = env.unpack([BASE, MIDDLE, TOP], ["gzip", "zstd", "none"])
    root = env.view(top)
    assert sorted(os.listdir(root / "etc")) == ["a", "b", "c"]
    assert (root / "etc/a").is_dir()  # whited out in MIDDLE, re-created as a dir in TOP
    assert os.listdir(root / "etc/a") == ["again"]
    assert (root / "etc/b").read_bytes() == b"b3"
    assert os.listdir(root / "opt/x") == ["new"]  # opaque: nothing of BASE's opt/x shows
    assert not (root / "bin/sh").exists() and not (root / "bin/sh").is_symlink()
    # The parent dir copied into MIDDLE's upper kept BASE's owner and mode.
    st = os.stat(root / "tmp")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o1777, 5, 6)
    assert sorted(os.listdir(root / "tmp")) == ["added"]
    # The hardlink to a lower file was copied up and linked: same contents, own inode.
    assert (root / "bin/ls").read_bytes() == b"BB"
    assert stat.S_IMODE(os.stat(root / "bin/ls").st_mode) == 0o755
    # Each layer still reads as itself: the middle view shows MIDDLE over BASE only.
    middle = env.view(chain_ids([sha256(BASE), sha256(MIDDLE)])[1])
    assert (middle / "etc/b").read_bytes() == b"b"
    assert (middle / "bin/sh").is_symlink()
    assert not (middle / "etc/a").exists()


def test_upper_layers_hold_overlay_whiteouts(env: Env) -> None:
    top = env.unpack([BASE, MIDDLE])
    row_dirs = sorted((env.tmp / "snapshots/snapshots").iterdir(), key=lambda p: int(p.name))
    upper = row_dirs[-1] / "fs"
    st = os.lstat(upper / "etc/a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(upper / "opt/x", "trusted.overlay.opaque") == b"y"
    assert not (upper / "etc/.wh.a").exists()
    assert env.sn.stat(top).kind is Kind.COMMITTED


def test_active_snapshot_is_writable_and_copy_on_write(env: Env) -> None:
    top = env.unpack([BASE])
    root = env.active(top)
    (root / "etc/b").write_bytes(b"changed")
    (root / "new").write_bytes(b"n" * 50_000)
    (root / "etc/a").unlink()
    used = env.sn.usage("container")
    assert used.size >= 50_000 and used.inodes >= 3
    assert (env.view(top) / "etc/b").read_bytes() == b"b"
    assert (env.view(top) / "etc/a").exists()


def test_ownership_devices_fifos_and_xattrs(env: Env) -> None:
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # VFS_CAP_REVISION_2, cap_net_raw
    xattrs = {"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.k": "t",
              "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")}
    tar = layer(
        file("bin/ping", b"p", 0o4711, uid=0, gid=0, pax=xattrs),
        file("home/u/f", b"f", 0o2640, uid=1000, gid=2000),
        directory("home/u", 0o750, uid=1000, gid=1000),
        symlink("home/u/l", "f", uid=1000, gid=1001),
        Entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        Entry("dev/loop9", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=9, gid=6),
        Entry("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=3),
    )
    root = env.view(env.unpack([BASE, tar]))
    st = os.stat(root / "bin/ping")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o4711, 0)  # setuid survived the chown
    assert os.getxattr(root / "bin/ping", "user.k") == b"v"
    assert os.getxattr(root / "bin/ping", "trusted.k") == b"t"
    assert os.getxattr(root / "bin/ping", "security.capability") == cap
    st = os.stat(root / "home/u/f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o2640, 1000, 2000)
    assert (os.stat(root / "home/u").st_uid, stat.S_IMODE(os.stat(root / "home/u").st_mode)) \
        == (1000, 0o750)
    assert (os.lstat(root / "home/u/l").st_uid, os.lstat(root / "home/u/l").st_gid) == (1000, 1001)
    st = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(root / "dev/loop9")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 9) and st.st_gid == 6
    st = os.lstat(root / "run/fifo")
    assert stat.S_ISFIFO(st.st_mode) and st.st_uid == 3 and stat.S_IMODE(st.st_mode) == 0o620


def test_remove_with_children_refused_then_in_order(env: Env) -> None:
    top = env.unpack([BASE, MIDDLE])
    base = sha256(BASE)
    with pytest.raises(FailedPrecondition):
        env.sn.remove(base)
    env.sn.remove(top)
    env.sn.remove(base)
    assert os.listdir(env.tmp / "snapshots/snapshots") == []


def test_many_layers_beyond_the_mount_page_limit(env: Env) -> None:
    tars = [layer(file(f"layer{i:03}", str(i).encode())) for i in range(60)]
    top = env.unpack(tars)
    mounts = env.sn.view("check", top)
    env.sn.remove("check")
    assert len(",".join(mounts[0].options)) > os.sysconf("SC_PAGE_SIZE")
    root = env.view(top)
    assert len(os.listdir(root)) == 60
    assert (root / "layer000").read_bytes() == b"0"
    assert (root / "layer059").read_bytes() == b"59"


CRASH_AFTER_RENAME = """
import os, sys
from pydeskd.containerd.snapshots.overlay import OverlaySnapshotter
sn = OverlaySnapshotter(sys.argv[1])
real = os.rename
def rename_then_die(src, dst):
    real(src, dst)
    os._exit(9)  # killed between the rename and the transaction's commit
os.rename = rename_then_die
sn.prepare("doomed")
"""


def test_cleanup_after_a_crash_mid_create(tmp_path: Path) -> None:
    root = tmp_path / "s"
    sn = OverlaySnapshotter(root)
    sn.prepare("kept")
    env_vars = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", CRASH_AFTER_RENAME, str(root)], env=env_vars,
                          check=False)
    assert proc.returncode == 9
    assert sorted(os.listdir(root / "snapshots")) == ["1", "2"]  # the orphan is on disk
    again = OverlaySnapshotter(root)
    with pytest.raises(NotFound):
        again.stat("doomed")
    again.cleanup()
    assert os.listdir(root / "snapshots") == ["1"]
    again.prepare("next")  # and the store works on
    assert again.stat("kept").kind is Kind.ACTIVE


def test_hardlink_to_a_target_whited_out_in_the_same_layer_is_rejected(env: Env) -> None:
    with pytest.raises(InvalidArgument, match="whiteout"):
        env.unpack([BASE, layer(whiteout("etc/b"), hardlink("etc/b2", "etc/b"))])
    names: list[str] = []
    env.sn.walk(lambda i: names.append(i.name))
    assert names == [sha256(BASE)]


def test_concurrent_unpacks_share_one_stack(env: Env) -> None:
    """Four unpacks of one image and two of an image sharing its base, all at once."""
    import threading

    results: list[object] = []
    lock = threading.Lock()
    big = image(env.store, [BASE, MIDDLE, TOP], ["gzip"] * 3)
    small = image(env.store, [BASE, TOP], ["gzip"] * 2)

    def go(manifest: Manifest, config: ImageConfig) -> None:
        try:
            out: object = unpack_layers(manifest, config, env.store, env.sn, Collector())
        except Exception as err:  # collected, asserted below
            out = err
        with lock:
            results.append(out)

    threads = [threading.Thread(target=go, args=job) for job in [big] * 4 + [small] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    three = chain_ids([sha256(BASE), sha256(MIDDLE), sha256(TOP)])
    two = chain_ids([sha256(BASE), sha256(TOP)])
    assert sorted(map(str, results)) == sorted([three[-1]] * 4 + [two[-1]] * 2)
    names: list[str] = []
    env.sn.walk(lambda i: names.append(i.name))
    assert sorted(names) == sorted({*three, *two})  # no extract-* snapshot left behind
    assert len(os.listdir(env.tmp / "snapshots/snapshots")) == len(names)
    assert (env.view(three[-1]) / "etc/b").read_bytes() == b"b3"


@pytest.mark.parametrize("target", ["etc/a", "opt/x/old", "opt/x/sub/deep"])
def test_hardlink_copy_up_respects_lower_whiteouts_and_opaque_dirs(env: Env, target: str) -> None:
    """etc/a is whited out by MIDDLE, opt/x is opaque there: none of these exist any more."""
    with pytest.raises(InvalidArgument, match="not found"):
        env.unpack([BASE, MIDDLE, layer(hardlink("h", target))])


def test_hardlink_copy_up_finds_the_nearest_lower(env: Env) -> None:
    top = env.unpack([BASE, MIDDLE, layer(hardlink("h1", "opt/x/new"), hardlink("h2", "etc/b"))])
    root = env.view(top)
    assert (root / "h1").read_bytes() == b"new"
    assert (root / "h2").read_bytes() == b"b"


def test_directory_whited_out_and_recreated_in_one_layer_hides_the_lower_one(env: Env) -> None:
    top = env.unpack([BASE, layer(whiteout("opt/x"), directory("opt/x"), file("opt/x/fresh"))])
    assert os.listdir(env.view(top) / "opt/x") == ["fresh"]
