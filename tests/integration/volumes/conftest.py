"""A real pydeskd with ``volimg:latest`` loaded: busybox plus content to fill volumes from.

``volimg`` has ``/data`` (a file 0640 owned 1000:1000, a directory 0750 owned 7:8, a relative
symlink, a hardlink pair, a ``user.color`` xattr, a char device 1:3), ``VOLUME /vol`` with
``/vol/from-image``, ``/etc-link -> /etc`` (inside the image) and ``/escape`` -> an absolute
path on *this host* whose directory holds a marker file: a fill that followed it out of the
rootfs would copy the marker.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import (
    ImageLayout,
    build_layer,
    busybox_rootfs_entries,
    char_device,
    directory,
    file,
    hardlink,
    symlink,
)
from tests.support.pydeskd import Pydeskd

IMAGE = "volimg:latest"


def _image_tar(where: Path, host_dir: Path) -> Path:
    entries = [
        *busybox_rootfs_entries(),
        directory("data"),
        file("data/seed.txt", "seed\n", 0o640, uid=1000, gid=1000),
        directory("data/sub", 0o750, uid=7, gid=8),
        file("data/sub/deep.txt", "deep\n"),
        symlink("data/link", "seed.txt"),
        file("data/a", "linked\n"),
        hardlink("data/b", "data/a"),
        file("data/attrs", "x\n", xattrs={"user.color": b"blue"}),
        char_device("data/null", 1, 3, 0o666),
        directory("vol"),
        file("vol/from-image", "image\n"),
        symlink("etc-link", "/etc"),
        symlink("escape", "/../../.." + str(host_dir)),
    ]
    entries.sort(key=lambda e: e.path)
    layout = ImageLayout(where / "layout")
    layout.add_image([build_layer(entries)], tag=IMAGE,
                     container_config={"Volumes": {"/vol": {}}})
    out = where / "volimg.tar"
    with tarfile.open(out, "w") as tar:
        for child in sorted((where / "layout").iterdir()):
            tar.add(child, arcname=child.name)
    return out


class Host:
    """A host directory the image's ``/escape`` symlink names."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pd-escape-", dir="/tmp"))
        (self.dir / "HOST-SECRET").write_text("must never be copied\n")


@pytest.fixture(scope="module")
def host_dir() -> Iterator[Host]:
    host = Host()
    yield host
    shutil.rmtree(host.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(host_dir: Host) -> Iterator[Pydeskd]:
    # a short base: the shims' unix socket paths live below it (108 bytes at most)
    base = Path(tempfile.mkdtemp(prefix="pdv-", dir="/tmp"))
    try:
        archive = _image_tar(base, host_dir.dir)
        with Pydeskd(base / "d") as d:
            out = d.docker("load", "-i", str(archive)).stdout.decode()
            assert "volimg:latest" in out, out
            yield d
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def d(daemon: Pydeskd) -> Iterator[Pydeskd]:
    """The module's daemon; every container and volume a test leaves is removed after it."""
    yield daemon
    ids = daemon.docker("ps", "-aq").stdout.decode().split()
    if ids:
        daemon.docker("rm", "-fv", *ids)
    names = daemon.docker("volume", "ls", "-q").stdout.decode().split()
    if names:
        daemon.docker("volume", "rm", "-f", *names)
    assert daemon.docker("volume", "ls", "-q").stdout == b""


def text(result: object) -> str:
    stdout = getattr(result, "stdout", b"")
    return stdout.decode() if isinstance(stdout, bytes) else str(stdout)
