"""Building layer tars and checking trees, for the archive, snapshot and unpack tests.

``Entry`` describes one tar member; ``layer(*entries)`` gives the tar bytes (PAX format, so long
names and xattrs work). ``tree(path)`` records every entry under a directory (type, mode,
owner, size, contents hash, link target, mtime) so a test can prove that nothing changed there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore
from pydeskd.containerd.errors import AlreadyExists


@dataclass(frozen=True)
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    mtime: float = 1_600_000_000
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def file(name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, mode, **kw)  # type: ignore[arg-type]


def directory(name: str, mode: int = 0o755, **kw: object) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode, **kw)  # type: ignore[arg-type]


def symlink(name: str, target: str, **kw: object) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target, **kw)  # type: ignore[arg-type]


def hardlink(name: str, target: str, **kw: object) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target, **kw)  # type: ignore[arg-type]


def whiteout(path: str) -> Entry:
    head, _, base = path.rpartition("/")
    return file(f"{head}/.wh.{base}" if head else f".wh.{base}", mode=0o600)


def opaque(directory_path: str) -> Entry:
    return file(f"{directory_path.rstrip('/')}/.wh..wh..opq", mode=0o600)


def layer(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.pax_headers = dict(e.pax)
            if e.type == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zstded(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    digest: str
    link: str
    mtime_ns: int
    rdev: int


def tree(root: Path) -> dict[str, Node]:
    """Every entry under ``root`` (root itself as ""), without following symlinks."""
    out: dict[str, Node] = {}

    def visit(path: Path, rel: str) -> None:
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        digest = link = ""
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            link = os.readlink(path)
        out[rel] = Node(str(kind), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                        digest, link, st.st_mtime_ns, st.st_rdev)
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(path)):
                visit(path / child, f"{rel}/{child}")

    visit(root, "")
    return out


def put_blob(store: FileStore, data: bytes) -> str:
    """Commit ``data`` to a content store; returns its digest."""
    digest = sha256(data)
    try:
        with store.writer(f"test-{digest}", len(data), digest) as w:
            w.write(data)
            w.commit(len(data), digest)
    except AlreadyExists:
        pass
    return digest


def image(store: FileStore, tars: list[bytes], compression: list[str] | None = None,
          diff_ids: list[str] | None = None) -> tuple[oci.Manifest, oci.ImageConfig]:
    """Store layers (compressed as asked: "none", "gzip", "zstd") and return (Manifest, config).

    ``diff_ids`` overrides the config's (to test a mismatch).
    """
    compression = compression or ["none"] * len(tars)
    layers = []
    for tar, kind in zip(tars, compression, strict=True):
        blob = {"none": tar, "gzip": gzipped(tar), "zstd": zstded(tar)}[kind]
        media = {"none": oci.OCI_LAYER, "gzip": oci.OCI_LAYER_GZIP,
                 "zstd": oci.OCI_LAYER_ZSTD}[kind]
        layers.append({"mediaType": media, "digest": put_blob(store, blob), "size": len(blob)})
    config_doc = {"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": diff_ids or [sha256(t) for t in tars]}}
    config_bytes = json.dumps(config_doc).encode()
    manifest_doc = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": {
        "mediaType": oci.OCI_CONFIG, "digest": put_blob(store, config_bytes),
        "size": len(config_bytes)}, "layers": layers}
    return (oci.Manifest.parse(json.dumps(manifest_doc).encode()),
            oci.ImageConfig.parse(config_bytes))
