"""Tiny images for the imageio tests, written straight into a content store.

A stand-in until tests/support/images.py (busybox-based OCI layouts) lands: layers are small
tars built in memory; ``busybox_rootfs_tar`` makes a real busybox root filesystem tar.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore
from pydeskd.containerd.errors import AlreadyExists
from pydeskd.containerd.imageio.docker_archive import CommitContext
from pydeskd.containerd.images import ImageStore
from pydeskd.containerd.leases import LeaseManager
from pydeskd.containerd.progress import Collector

BUSYBOX = Path("/bin/busybox")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


@dataclass
class Stores:
    root: Path
    content: FileStore
    images: ImageStore
    leases: LeaseManager
    events: Collector

    @property
    def ctx(self) -> CommitContext:
        return CommitContext(self.images, self.leases, None, self.events)

    def put(self, data: bytes) -> str:
        digest = sha(data)
        with contextlib.suppress(AlreadyExists), \
                self.content.writer(f"t-{digest}", len(data), digest) as w:
            w.write(data)
            w.commit(len(data), digest)
        return digest

    def desc(self, data: bytes, media_type: str, **kw: object) -> oci.Descriptor:
        return oci.Descriptor(media_type, self.put(data), len(data), **kw)  # type: ignore[arg-type]

    def blobs(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}

        def read(info: object) -> None:
            digest = info.digest  # type: ignore[attr-defined]
            with self.content.reader_at(digest) as r:
                out[digest] = r.read_at(0, r.size)

        self.content.walk(read)
        return out

    def image(self, layers: Sequence[bytes], arch: str = "amd64",
              layer_type: str = oci.OCI_LAYER_GZIP, tag: str = "") -> oci.Descriptor:
        """A manifest (its blobs in the store) with ``layers`` (uncompressed tars)."""
        descs = []
        for tar in layers:
            blob = gz(tar) if layer_type.endswith("gzip") else tar
            descs.append(self.desc(blob, layer_type))
        config = oci.canonical_json({
            "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"], "Labels": {"tag": tag}},
            "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layers]},
            "history": [{"created_by": "test"} for _ in layers]})
        manifest = oci.Manifest(oci.OCI_MANIFEST, self.desc(config, oci.OCI_CONFIG),
                                tuple(descs))
        return self.desc(oci.canonical_json(manifest.to_json()), oci.OCI_MANIFEST)

    def index(self, manifests: Sequence[tuple[oci.Descriptor, str]]) -> oci.Descriptor:
        entries = tuple(oci.Descriptor(m.media_type, m.digest, m.size,
                                       platform=oci.Platform("linux", arch))
                        for m, arch in manifests)
        index = oci.Index(oci.OCI_INDEX, entries)
        return self.desc(oci.canonical_json(index.to_json()), oci.OCI_INDEX)

    def ingests(self) -> list[str]:
        return [s.ref for s in self.content.list_statuses()]

    def close(self) -> None:
        self.images.close()
        self.leases.close()


@contextlib.contextmanager
def stores(root: Path) -> Iterator[Stores]:
    s = Stores(root, FileStore(root / "content"), ImageStore(root / "meta"),
               LeaseManager(root / "meta"), Collector())
    try:
        yield s
    finally:
        s.close()


def busybox_rootfs_tar() -> bytes:
    """A root filesystem tar: /bin/busybox, a few applet symlinks, the usual directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "tmp", "root"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(os.path.realpath(BUSYBOX), arcname="bin/busybox")
        for applet in ("sh", "ls", "echo", "cat"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return buf.getvalue()


class Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read (``first`` for the first read),
    as a socket may."""

    def __init__(self, data: bytes, step: int = 7, first: int | None = None) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step
        self._first = first

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        step = self._step if self._first is None else self._first
        self._first = None
        n = min(len(buffer), step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n
