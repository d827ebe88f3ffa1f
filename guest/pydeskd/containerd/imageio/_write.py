"""Writing images out as an OCI image layout, optionally with Docker's ``manifest.json``.

What it is for: ``docker save`` (Docker 25+ writes an OCI layout plus ``manifest.json`` and
``repositories``, which is what older engines such as Docker 20.10 read) and OCI layout exports,
to a tar stream or a directory. The output is deterministic -- blobs sorted by digest, fixed
times and owners, canonical JSON -- so saving what was loaded gives the same bytes.

What it must never do: write a blob it has not verified against its descriptor (a corrupt
store must not produce an archive that looks valid), or write outside the target directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from pydeskd.containerd import oci
from pydeskd.containerd.content import Provider
from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument, NotFound
from pydeskd.containerd.image_content import available_manifests, image_manifests, read_blob
from pydeskd.containerd.imageio._archive import iter_chunks
from pydeskd.containerd.images import Image

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


class Sink(Protocol):
    def add_dir(self, name: str) -> None: ...

    def add_bytes(self, name: str, data: bytes) -> None: ...

    def add_blob(self, name: str, provider: Provider, desc: oci.Descriptor) -> None: ...


class _VerifyingReader:
    """A file-like view of a blob that checks size and digest as it is read (for tarfile)."""

    def __init__(self, provider: Provider, desc: oci.Descriptor) -> None:
        self._reader = provider.reader_at(desc.digest)
        self._desc = desc
        self._chunks = iter_chunks(self._reader, desc.size)
        self._cur = b""
        self._pos = 0
        self._hash = hashlib.sha256()
        self._done = 0

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes unless the blob ends first (tarfile insists on full reads)."""
        want = self._desc.size if n < 0 else n
        parts = []
        while want > 0:
            if self._pos >= len(self._cur):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._hash.update(chunk)
                self._done += len(chunk)
                self._cur, self._pos = chunk, 0
                if self._done == self._desc.size:
                    # Checked before the last bytes leave: a corrupt blob fails the export.
                    self._check()
            piece = self._cur[self._pos:self._pos + want]
            self._pos += len(piece)
            want -= len(piece)
            parts.append(piece)
        return b"".join(parts)

    def _check(self) -> None:
        if "sha256:" + self._hash.hexdigest() != self._desc.digest:
            raise FailedPrecondition(f"blob {self._desc.digest} in the store is corrupt")

    def close(self) -> None:
        self._reader.close()


class TarSink:
    def __init__(self, out: IO[bytes]) -> None:
        # Closed in close(): the sink outlives this call.
        self._tar = tarfile.open(  # noqa: SIM115
            fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)

    @staticmethod
    def _info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 0
        info.mode = 0o755 if directory else 0o644
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        info.uname = info.gname = ""
        return info

    def add_dir(self, name: str) -> None:
        self._tar.addfile(self._info(name.rstrip("/") + "/", 0, directory=True))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))

    def add_blob(self, name: str, provider: Provider, desc: oci.Descriptor) -> None:
        reader = _VerifyingReader(provider, desc)
        try:
            self._tar.addfile(self._info(name, desc.size), reader)
        finally:
            reader.close()

    def close(self) -> None:
        self._tar.close()


class DirSink:
    """Writes under ``root`` (which must be empty or absent); each file atomically."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise InvalidArgument(f"{root} is not empty")
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*name.split("/"))

    def add_dir(self, name: str) -> None:
        self._path(name).mkdir(exist_ok=True)

    def _write(self, name: str, chunks: Any) -> None:
        path = self._path(name)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def add_bytes(self, name: str, data: bytes) -> None:
        self._write(name, [data])

    def add_blob(self, name: str, provider: Provider, desc: oci.Descriptor) -> None:
        reader = _VerifyingReader(provider, desc)
        try:
            self._write(name, iter(lambda: reader.read(1 << 20), b""))
        finally:
            reader.close()

    def close(self) -> None:
        pass


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


@dataclass
class _Plan:
    blobs: dict[str, oci.Descriptor] = field(default_factory=dict)
    index: list[dict[str, Any]] = field(default_factory=list)
    manifest_json: list[dict[str, Any]] = field(default_factory=list)
    repositories: dict[str, dict[str, str]] = field(default_factory=dict)


def _collect(provider: Provider, desc: oci.Descriptor, wanted: set[str],
             plan: _Plan) -> bool:
    """Add ``desc`` and what it needs of ``wanted`` to ``plan``; False if nothing wanted is
    below it."""
    if desc.digest in wanted:
        data = read_blob(provider, desc)
        manifest = oci.Manifest.parse(data, desc.media_type)
        plan.blobs[desc.digest] = desc
        plan.blobs[manifest.config.digest] = manifest.config
        for layer in manifest.layers:
            try:
                provider.reader_at(layer.digest).close()
            except NotFound:
                if layer.urls:
                    continue  # a foreign layer: its registry serves it, archives omit it
                raise
            plan.blobs[layer.digest] = layer
        return True
    media_type = desc.media_type
    if media_type not in oci.INDEX_TYPES and media_type:
        return False
    try:
        data = read_blob(provider, desc)
    except NotFound:
        return False
    media_type = media_type or oci.sniff_media_type(data)
    if media_type not in oci.INDEX_TYPES:
        return False
    found = False
    for entry in oci.Index.parse(data, media_type).manifests:
        found = _collect(provider, entry, wanted, plan) or found
    if found:
        plan.blobs[desc.digest] = desc
    return found


def _platform_manifests(provider: Provider, target: oci.Descriptor,
                        platform: oci.Platform | None
                        ) -> list[tuple[oci.Descriptor, oci.Manifest, oci.ImageConfig]]:
    if platform is not None:
        return [image_manifests(provider, target, oci.PlatformMatcher(platform))]
    out = []
    for desc in available_manifests(provider, target):
        try:
            manifest = oci.Manifest.parse(read_blob(provider, desc), desc.media_type)
            config = oci.ImageConfig.parse(read_blob(provider, manifest.config))
        except (NotFound, InvalidArgument):
            continue  # an artifact, or a platform whose config was not pulled
        out.append((desc, manifest, config))
    if not out:
        raise NotFound(f"image {target.digest}: no platform of it is in the content store")
    return out


def plan_export(provider: Provider, images: Sequence[Image],
                platform: oci.Platform | None = None, docker: bool = True) -> _Plan:
    """What to write for ``images`` (records; their names become tags)."""
    if not images:
        raise InvalidArgument("nothing to save: no image given")
    plan = _Plan()
    by_target: dict[str, list[Image]] = {}
    for image in images:
        by_target.setdefault(image.target.digest, []).append(image)
    host = oci.PlatformMatcher(oci.Platform.host())
    seen_entries: set[str] = set()
    for records in by_target.values():
        target = records[0].target
        manifests = _platform_manifests(provider, target, platform)
        wanted = {desc.digest for desc, _, _ in manifests}
        if not _collect(provider, target, wanted, plan):
            raise NotFound(f"image {target.digest}: its manifests are not in the store")
        ranked = sorted(range(len(manifests)), key=lambda i: (
            host.rank(manifests[i][2].platform) is None, host.rank(manifests[i][2].platform) or 0,
            i))
        primary = ranked[0]
        tags: list[str] = []
        for record in sorted(records, key=lambda r: r.name):
            annotations = dict(target.annotations)
            ref = record.reference
            if ref is not None:
                annotations[ANNOTATION_IMAGE_NAME] = record.name
                if ref.tag is not None:
                    annotations[oci.ANNOTATION_REF_NAME] = ref.tag
                    if ref.digest is None:
                        tags.append(ref.familiar)
            entry = oci.Descriptor(target.media_type, target.digest, target.size,
                                   annotations, target.platform, target.urls).to_json()
            key = oci.canonical_json(entry).decode()
            if key not in seen_entries:
                seen_entries.add(key)
                plan.index.append(entry)
        if not docker:
            continue
        for i, (_, manifest, _) in enumerate(manifests):
            plan.manifest_json.append({
                "Config": blob_name(manifest.config.digest),
                "RepoTags": tags if i == primary else [],
                "Layers": [blob_name(layer.digest) for layer in manifest.layers
                           if layer.digest in plan.blobs],
            })
        top = manifests[primary][1].layers
        for tag in tags:
            repo, _, name = tag.rpartition(":")
            if top:
                plan.repositories.setdefault(repo, {})[name] = \
                    top[-1].digest.removeprefix("sha256:")
    return plan


def write_layout(sink: Sink, provider: Provider, plan: _Plan) -> None:
    sink.add_dir("blobs")
    sink.add_dir("blobs/sha256")
    for digest in sorted(plan.blobs):
        sink.add_blob(blob_name(digest), provider, plan.blobs[digest])
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": plan.index}
    sink.add_bytes("index.json", oci.canonical_json(index))
    if plan.manifest_json:
        sink.add_bytes("manifest.json", oci.canonical_json(plan.manifest_json))
    sink.add_bytes("oci-layout", OCI_LAYOUT)
    if plan.manifest_json:
        sink.add_bytes("repositories", oci.canonical_json(plan.repositories))
