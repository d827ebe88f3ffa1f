"""Test images built in pure Python and written as OCI image layout directories.

What it is for: every image test (registry client, unpacker, image store, save/load, bench) needs
real images with known contents: whiteouts, opaque directories, hardlinks, devices, xattrs, odd
modes and owners, gzip/zstd/uncompressed layers, Docker v2 media types, multi-platform indexes.
They are built here from entry lists, bit for bit the same on every run (fixed mtimes, gzip
header mtime 0, fixed zstd level, no user/group names), so their digests are stable.

What it must never do: validate or normalize entry names. Hostile-input tests build layers with
``../``, absolute names and escaping links through the same ``build_layer``; entries are written
in the order given, exactly as given.

The predefined images are at the end: ``PREDEFINED`` maps single, multi, zstd, multiplatform,
docker_v2 and docker_list to a function of a directory that writes the layout and returns the
descriptor tagged ``latest``; ``build_big`` is separate (large, for bench/pull). What each
contains, and what a correct unpack of it looks like, is documented on each function.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import zstandard

from pydeskd.containerd.oci import (
    ANNOTATION_REF_NAME,
    ANNOTATION_REFERENCE_TYPE,
    ATTESTATION_MANIFEST,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Compression,
    Descriptor,
    Platform,
    canonical_json,
)

BUSYBOX = Path("/bin/busybox")
# 2023-11-14T22:13:20Z: every entry, config and history item carries it unless told otherwise.
FIXED_MTIME = 1_700_000_000
FIXED_CREATED = "2023-11-14T22:13:20Z"
ANNOTATION_REFERENCE_DIGEST = "vnd.docker.reference.digest"
IN_TOTO = "application/vnd.in-toto+json"
DEFAULT_PLATFORM = Platform("linux", "amd64")


class Kind(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"


_TAR_TYPES = {Kind.FILE: tarfile.REGTYPE, Kind.DIR: tarfile.DIRTYPE, Kind.SYMLINK: tarfile.SYMTYPE,
              Kind.HARDLINK: tarfile.LNKTYPE, Kind.CHAR: tarfile.CHRTYPE,
              Kind.BLOCK: tarfile.BLKTYPE, Kind.FIFO: tarfile.FIFOTYPE}


@dataclass(frozen=True)
class Entry:
    """One tar entry. ``path`` is written verbatim (no leading-slash stripping, no checks)."""

    path: str
    kind: Kind
    mode: int
    content: bytes = b""
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    # name -> value, written as PAX 'SCHILY.xattr.<name>' records (values must be UTF-8).
    xattrs: Mapping[str, bytes] = field(default_factory=dict)


def file(path: str, content: bytes | str = b"", mode: int = 0o644, **kw: Any) -> Entry:
    data = content.encode() if isinstance(content, str) else content
    return Entry(path, Kind.FILE, mode, data, **kw)


def directory(path: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(path, Kind.DIR, mode, **kw)


def symlink(path: str, target: str, **kw: Any) -> Entry:
    return Entry(path, Kind.SYMLINK, 0o777, linkname=target, **kw)


def hardlink(path: str, target: str, **kw: Any) -> Entry:
    """``target`` is the archive name of an earlier entry (tar convention), not a relative link."""
    return Entry(path, Kind.HARDLINK, 0o644, linkname=target, **kw)


def char_device(path: str, major: int, minor: int, mode: int = 0o666, **kw: Any) -> Entry:
    return Entry(path, Kind.CHAR, mode, devmajor=major, devminor=minor, **kw)


def block_device(path: str, major: int, minor: int, mode: int = 0o660, **kw: Any) -> Entry:
    return Entry(path, Kind.BLOCK, mode, devmajor=major, devminor=minor, **kw)


def fifo(path: str, mode: int = 0o644, **kw: Any) -> Entry:
    return Entry(path, Kind.FIFO, mode, **kw)


def whiteout(path: str) -> Entry:
    """Deletes ``path`` from the layers below: an empty ``dir/.wh.name`` file."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0o644)


def opaque(dir_path: str) -> Entry:
    """Hides everything the layers below have in ``dir_path`` (``.wh..wh..opq``)."""
    return file(f"{dir_path.rstrip('/')}/.wh..wh..opq", mode=0o644)


def tar_bytes(entries: Sequence[Entry]) -> bytes:
    """The uncompressed PAX tar of ``entries``, in order."""
    out = io.BytesIO()
    earlier: dict[str, Entry] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.type = _TAR_TYPES[e.kind]
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, e.mtime
            target = earlier.get(e.linkname) if e.kind is Kind.HARDLINK else None
            if target is not None:
                # As tar tools write it: a hardlink's header repeats its file's metadata. The
                # Docker Engine applies that mode to the file (moby's createTarFile chmods the
                # link), so a link header with another mode would change the linked file there.
                info.mode, info.uid, info.gid, info.mtime = (target.mode, target.uid,
                                                             target.gid, target.mtime)
            earlier[e.path] = e
            info.uname = info.gname = ""
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.pax_headers = {f"SCHILY.xattr.{k}": v.decode() for k, v in
                                sorted(e.xattrs.items())}
            if e.kind is Kind.FILE:
                info.size = len(e.content)
                tar.addfile(info, io.BytesIO(e.content))
            else:
                tar.addfile(info)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    blob: bytes
    media_type: str
    digest: str  # of the blob as stored (compressed)
    diff_id: str  # of the uncompressed tar

    @property
    def size(self) -> int:
        return len(self.blob)


def compress(data: bytes, compression: str) -> bytes:
    if compression == Compression.GZIP:
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == Compression.ZSTD:
        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == Compression.NONE:
        return data
    raise ValueError(f"unknown compression {compression!r}")


_OCI_LAYER_TYPES = {Compression.NONE: OCI_LAYER, Compression.GZIP: OCI_LAYER_GZIP,
                    Compression.ZSTD: OCI_LAYER_ZSTD}


def build_layer(entries: Sequence[Entry], compression: str = Compression.GZIP) -> Layer:
    """A layer blob with its OCI media type (``ImageLayout.add_image(docker=True)`` renames)."""
    return layer_from_tar(tar_bytes(entries), compression)


def layer_from_tar(tar: bytes, compression: str = Compression.GZIP) -> Layer:
    """A layer from a tar made elsewhere (e.g. a crafted one)."""
    blob = compress(tar, compression)
    return Layer(blob, _OCI_LAYER_TYPES[compression], sha256(blob), sha256(tar))


@functools.cache
def _busybox() -> bytes:
    if not BUSYBOX.exists():
        raise RuntimeError("busybox-static is not installed (scripts/setup installs it)")
    return BUSYBOX.read_bytes()


# Hardlinked applets exercise in-layer hardlinks; the rest are symlinks, as busybox --install -s.
HARDLINKED_APPLETS = ("sh", "ls")
SYMLINKED_APPLETS = ("cat", "echo", "env", "false", "grep", "head", "hostname", "httpd", "id",
                     "mkdir", "printf", "ps", "rm", "sleep", "stat", "test", "touch", "true",
                     "uname", "wget")


def busybox_rootfs_entries() -> list[Entry]:
    """A minimal runnable root filesystem from busybox-static."""
    entries = [directory(d) for d in ("bin", "dev", "etc", "home", "proc", "run", "sys", "usr",
                                      "var")]
    entries += [directory("root", 0o700), directory("tmp", 0o1777),
                file("bin/busybox", _busybox(), 0o755)]
    entries += [hardlink(f"bin/{a}", "bin/busybox") for a in HARDLINKED_APPLETS]
    entries += [symlink(f"bin/{a}", "busybox") for a in SYMLINKED_APPLETS]
    entries += [
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                           "nobody:x:65534:65534:nobody:/:/bin/false\n"),
        file("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
    ]
    return sorted(entries, key=lambda e: e.path)


class ImageLayout:
    """An OCI image layout directory: ``oci-layout``, ``index.json``, ``blobs/sha256/``."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        """Opens the layout at ``root``, creating an empty one there if ``create``; without it
        a directory that is not a layout raises ``FileNotFoundError``."""
        self.root = root
        if not create:
            if not (root / "index.json").is_file():
                raise FileNotFoundError(f"not an OCI image layout: {root}")
            return
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (root / "index.json").exists():
            (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
            self._write_index([])

    # -- blobs and tags

    def put_blob(self, data: bytes) -> str:
        digest = sha256(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.write_bytes(data)
        return digest

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def _entries(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = json.loads((self.root / "index.json").read_text())[
            "manifests"]
        return entries

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        (self.root / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True))

    def tag(self, tag: str, desc: Descriptor) -> None:
        """Names ``desc`` ``tag`` in index.json (replacing an older entry of that name)."""
        entries = [e for e in self._entries()
                   if e.get("annotations", {}).get(ANNOTATION_REF_NAME) != tag]
        annotations = {**desc.annotations, ANNOTATION_REF_NAME: tag}
        entries.append(Descriptor(desc.media_type, desc.digest, desc.size, annotations,
                                  desc.platform).to_json())
        self._write_index(entries)

    def resolve(self, tag: str) -> Descriptor:
        for e in self._entries():
            if e.get("annotations", {}).get(ANNOTATION_REF_NAME) == tag:
                return Descriptor.from_json(e)
        raise KeyError(f"no tag {tag!r} in {self.root}")

    def tags(self) -> list[str]:
        return sorted(e["annotations"][ANNOTATION_REF_NAME] for e in self._entries()
                      if ANNOTATION_REF_NAME in e.get("annotations", {}))

    def _put_json(self, obj: Mapping[str, Any], media_type: str,
                  platform: Platform | None = None,
                  annotations: Mapping[str, str] | None = None) -> Descriptor:
        data = canonical_json(obj)
        return Descriptor(media_type, self.put_blob(data), len(data), dict(annotations or {}),
                          platform)

    # -- images

    def add_image(self, layers: Sequence[Layer], *, platform: Platform = DEFAULT_PLATFORM,
                  container_config: Mapping[str, Any] | None = None,
                  tag: str | None = None, docker: bool = False,
                  annotations: Mapping[str, str] | None = None) -> Descriptor:
        """Writes the layers, a config and a manifest; returns the manifest's descriptor
        (with ``platform``, for use in an index). ``docker`` writes Docker v2 schema 2 media types
        (gzip layers only, as Docker has no zstd layer type)."""
        layer_descs = []
        for layer in layers:
            media_type = layer.media_type
            if docker:
                if media_type != OCI_LAYER_GZIP:
                    raise ValueError("Docker v2 manifests need gzip layers")
                media_type = DOCKER_LAYER_GZIP
            self.put_blob(layer.blob)
            layer_descs.append(Descriptor(media_type, layer.digest, layer.size))
        inner = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                 "Cmd": ["sh"], "WorkingDir": "/", **(container_config or {})}
        config: dict[str, Any] = {
            "architecture": platform.architecture, "os": platform.os, "created": FIXED_CREATED,
            "config": inner,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": FIXED_CREATED, "created_by": f"pydesk test layer {n}"}
                        for n in range(len(layers))],
        }
        if platform.variant:
            config["variant"] = platform.variant
        config_desc = self._put_json(config, DOCKER_CONFIG if docker else OCI_CONFIG)
        manifest_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifest: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": manifest_type, "config": config_desc.to_json(),
            "layers": [d.to_json() for d in layer_descs]}
        if annotations:
            manifest["annotations"] = dict(annotations)
        desc = self._put_json(manifest, manifest_type, platform)
        if tag is not None:
            self.tag(tag, desc)
        return desc

    def add_attestation(self, subject: Descriptor) -> Descriptor:
        """A BuildKit-style attestation manifest for ``subject``, as an index entry
        (platform unknown/unknown, ``vnd.docker.reference.type: attestation-manifest``)."""
        statement = canonical_json({"_type": "https://in-toto.io/Statement/v0.1",
                                    "predicateType": "https://spdx.dev/Document",
                                    "subject": [{"digest": {"sha256": subject.digest[7:]}}],
                                    "predicate": {"spdxVersion": "SPDX-2.3"}})
        layer = Descriptor(IN_TOTO, self.put_blob(statement), len(statement),
                           {"in-toto.io/predicate-type": "https://spdx.dev/Document"})
        config = self._put_json({"architecture": "unknown", "os": "unknown",
                                 "rootfs": {"type": "layers", "diff_ids": []}}, OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_json(),
                    "layers": [layer.to_json()]}
        return self._put_json(manifest, OCI_MANIFEST, Platform("unknown", "unknown"),
                              {ANNOTATION_REFERENCE_TYPE: ATTESTATION_MANIFEST,
                               ANNOTATION_REFERENCE_DIGEST: subject.digest})

    def add_index(self, manifests: Sequence[Descriptor], *, tag: str | None = None,
                  docker: bool = False) -> Descriptor:
        """An image index (Docker manifest list if ``docker``) of ``manifests``, in order."""
        media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
        index = {"schemaVersion": 2, "mediaType": media_type,
                 "manifests": [m.to_json() for m in manifests]}
        desc = self._put_json(index, media_type)
        if tag is not None:
            self.tag(tag, desc)
        return desc


# ---------------------------------------------------------------------------------------------
# Predefined images. Each writes an OCI layout at `root` and returns the descriptor of `latest`.

LATEST = "latest"


def build_single(root: Path) -> Descriptor:
    """busybox in one gzip layer (OCI media types)."""
    layout = ImageLayout(root)
    return layout.add_image([build_layer(busybox_rootfs_entries())], tag=LATEST)


_LONG_DIR = "opt/app/" + "d" * 60
_LONG_FILE = _LONG_DIR + "/" + "f" * 80  # > 100 bytes: needs a PAX path record


def multi_layers() -> list[list[Entry]]:
    """The four layers of ``multi``. After all four, a correct unpack has:

    - ``bin/wget`` gone (whiteout of a base file);
    - ``etc/doomed-file`` gone, ``etc/doomed-dir`` a *file* ("reborn as a file\\n": the directory
      and its children were whited out in layer 3, a file of that name added in layer 4);
    - ``etc/opaque-dir`` holding only ``new`` (opaque directory in layer 3);
    - ``opt/app/secret`` "rotated\\n", mode 0640, 1000:1000 (replaced in layer 3);
    - ``opt/app/replaced-by-dir`` a directory holding ``inside`` (file -> dir, no whiteout);
    - ``opt/app/symlink-replaced-by-file`` a regular file;
    - setuid/setgid/sticky modes, owners 1000:1000 and gid 5, a file with mtime 1e9, a hardlink
      pair (run.sh, run-hardlink.sh), relative/absolute/dangling symlinks, a char device 1:3, a
      block device 7:0, a fifo, a UTF-8 name with spaces, a >100-byte path, and ``user.`` and
      ``trusted.`` xattrs on ``opt/app/xattrs``.
    """
    features = [
        directory("etc"),
        directory("etc/doomed-dir"),
        file("etc/doomed-dir/a", "a\n"),
        directory("etc/doomed-dir/sub"),
        file("etc/doomed-dir/sub/b", "b\n"),
        file("etc/doomed-file", "bye\n"),
        directory("etc/opaque-dir"),
        file("etc/opaque-dir/old-a", "old a\n"),
        directory("etc/opaque-dir/old-sub"),
        file("etc/opaque-dir/old-sub/old-b", "old b\n"),
        directory("opt"),
        directory("opt/app", 0o750, uid=1000, gid=1000),
        file("opt/app/run.sh", "#!/bin/sh\necho hello from multi\n", 0o755),
        hardlink("opt/app/run-hardlink.sh", "opt/app/run.sh"),
        file("opt/app/secret", "s3cret\n", 0o600, uid=1000, gid=1000),
        file("opt/app/setuid", "suid\n", 0o4755),
        file("opt/app/setgid", "sgid\n", 0o2755, gid=5),
        directory("opt/app/sticky", 0o1777),
        file("opt/app/old", "old\n", mtime=1_000_000_000),
        file("opt/app/empty"),
        file("opt/app/xattrs", "x\n",
             xattrs={"user.pydesk.test": b"hello", "trusted.pydesk.test": b"trusted"}),
        symlink("opt/app/link-relative", "run.sh"),
        symlink("opt/app/link-absolute", "/etc/passwd"),
        symlink("opt/app/link-dangling", "/nonexistent/target"),
        char_device("opt/app/null", 1, 3),
        block_device("opt/app/loop0", 7, 0),
        fifo("opt/app/fifo"),
        file("opt/app/naïve name with spaces.txt", "unicode\n"),
        directory(_LONG_DIR),
        file(_LONG_FILE, "long\n"),
        file("opt/app/replaced-by-dir", "a file for now\n"),
        symlink("opt/app/symlink-replaced-by-file", "run.sh"),
    ]
    whiteouts = [
        directory("bin"),
        whiteout("bin/wget"),
        directory("etc"),
        whiteout("etc/doomed-dir"),
        whiteout("etc/doomed-file"),
        directory("etc/opaque-dir"),
        opaque("etc/opaque-dir"),
        file("etc/opaque-dir/new", "only me\n"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/opt/app:/bin/sh\n"
                           "nobody:x:65534:65534:nobody:/:/bin/false\n"),
        directory("opt/app", 0o750, uid=1000, gid=1000),
        file("opt/app/secret", "rotated\n", 0o640, uid=1000, gid=1000),
    ]
    top = [
        directory("etc"),
        file("etc/doomed-dir", "reborn as a file\n"),
        file("etc/motd", "pydesk multi\n"),
        directory("opt/app", 0o750, uid=1000, gid=1000),
        directory("opt/app/replaced-by-dir"),
        file("opt/app/replaced-by-dir/inside", "inside\n"),
        file("opt/app/symlink-replaced-by-file", "now a file\n"),
        directory("var/lib"),
        directory("var/lib/app", 0o700, uid=1000, gid=1000),
    ]
    return [busybox_rootfs_entries(), features, whiteouts, top]


def build_multi(root: Path) -> Descriptor:
    """Four gzip layers (see ``multi_layers``), config Env APP=multi, a label."""
    layout = ImageLayout(root)
    return layout.add_image(
        [build_layer(entries) for entries in multi_layers()], tag=LATEST,
        container_config={"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "APP=multi"],
                          "Labels": {"org.pydesk.test": "multi"}})


def build_zstd(root: Path) -> Descriptor:
    """busybox in a zstd layer, then an *uncompressed* layer adding ``etc/zstd-image``."""
    layout = ImageLayout(root)
    return layout.add_image([build_layer(busybox_rootfs_entries(), Compression.ZSTD),
                             build_layer([directory("etc"), file("etc/zstd-image", "zstd\n")],
                                         Compression.NONE)], tag=LATEST)


ARM64_V8 = Platform("linux", "arm64", "v8")


def build_multiplatform(root: Path) -> Descriptor:
    """An OCI index: linux/amd64, linux/arm64/v8, and an attestation for amd64 (unknown/unknown).

    Both images share the busybox base layer (one blob) and differ by ``etc/platform``, which
    holds the platform's name ("linux/amd64\\n", "linux/arm64/v8\\n"). Tags: ``latest`` (the
    index), ``amd64`` and ``arm64`` (the manifests, for tools that cannot pick from an index).
    """
    layout = ImageLayout(root)
    base = build_layer(busybox_rootfs_entries())
    entries = []
    for platform, tag in ((DEFAULT_PLATFORM, "amd64"), (ARM64_V8, "arm64")):
        top = build_layer([directory("etc"), file("etc/platform", f"{platform}\n")])
        entries.append(layout.add_image([base, top], platform=platform, tag=tag))
    entries.append(layout.add_attestation(entries[0]))
    return layout.add_index(entries, tag=LATEST)


def build_docker_v2(root: Path) -> Descriptor:
    """Docker v2 schema 2 media types: busybox + a layer adding ``etc/docker-v2``."""
    layout = ImageLayout(root)
    return layout.add_image([build_layer(busybox_rootfs_entries()),
                             build_layer([directory("etc"), file("etc/docker-v2", "docker\n")])],
                            tag=LATEST, docker=True)


def build_docker_list(root: Path) -> Descriptor:
    """A Docker manifest list: linux/amd64 and linux/arm64/v8 Docker v2 images sharing the base
    layer, each with ``etc/platform`` as in ``multiplatform``; tags latest, amd64, arm64."""
    layout = ImageLayout(root)
    base = build_layer(busybox_rootfs_entries())
    entries = []
    for platform, tag in ((DEFAULT_PLATFORM, "amd64"), (ARM64_V8, "arm64")):
        top = build_layer([directory("etc"), file("etc/platform", f"{platform}\n")])
        entries.append(layout.add_image([base, top], platform=platform, tag=tag, docker=True))
    return layout.add_index(entries, tag=LATEST, docker=True)


def build_big(root: Path, n_layers: int = 5, total_mb: int = 100, seed: int = 0) -> Descriptor:
    """busybox + ``n_layers`` gzip layers of pseudo-random (incompressible) data, ``total_mb``
    MiB in all, each a file ``data/blob-<n>``; ``seed`` makes different but stable images."""
    import random

    rng = random.Random(seed)
    chunk = total_mb * (1 << 20) // n_layers
    layers = []
    for n in range(n_layers):
        entries = busybox_rootfs_entries() if n == 0 else []
        entries += [directory("data"), file(f"data/blob-{n}", rng.randbytes(chunk))]
        layers.append(build_layer(entries))
    return ImageLayout(root).add_image(layers, tag=LATEST)


PREDEFINED = {"single": build_single, "multi": build_multi, "zstd": build_zstd,
              "multiplatform": build_multiplatform, "docker_v2": build_docker_v2,
              "docker_list": build_docker_list}
