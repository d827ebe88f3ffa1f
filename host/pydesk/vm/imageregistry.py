"""Push and pull the guest image as an OCI artifact, with the project's own registry client.

What it is for: ``push_image(dir, ref)`` uploads the three image files and ``image.json`` as the
layers of one OCI image manifest (``artifactType`` and config media type: vmcontract
``ARTIFACT_TYPE``; config blob: ``image.json``; each layer titled with its file name); the
rootfs layer is zstd-compressed (a third smaller even after erofs' lz4hc). ``pull_image(ref)``
fetches it into the image cache, verified three ways: the manifest against the reference (or
the registry's digest), each blob against its descriptor (the registry client does this), and
each file against ``image.json`` after decompression.

What it must never do: put into the cache a directory that did not verify, or import a guest
module other than ``pydeskd.vmcontract`` and the platform-neutral registry client.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from pydesk.vm import image as cache
from pydesk.vm.imagebase import ImageBuildError
from pydeskd import vmcontract
from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore, ReaderAt
from pydeskd.containerd.errors import ContainerdError
from pydeskd.containerd.registry import RegistryClient, RegistryHosts, as_reference

Progress = Callable[[str], None]
TITLE = "org.opencontainers.image.title"
ZSTD_SUFFIX = "+zstd"
COMPRESSED = frozenset({vmcontract.ROOTFS_FILE})
ZSTD_LEVEL = 3
CHUNK = 1 << 20
LAYER_ORDER = (vmcontract.IMAGE_INFO_FILE, vmcontract.KERNEL_FILE, vmcontract.INITRD_FILE,
               vmcontract.ROOTFS_FILE)


class _FileReader:
    """content.ReaderAt over a file."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("rb")
        self._size = path.stat().st_size

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, n: int) -> bytes:
        return os.pread(self._f.fileno(), n, offset)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Files:
    """content.Provider over blobs on disk, by digest."""

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}

    def add(self, path: Path, media_type: str, annotations: dict[str, str]) -> oci.Descriptor:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        self.paths[digest] = path
        return oci.Descriptor(media_type, digest, path.stat().st_size, annotations)

    def reader_at(self, digest: str) -> ReaderAt:
        return _FileReader(self.paths[digest])


def _client(insecure_host: str | None) -> RegistryClient:
    hosts = RegistryHosts(insecure=(insecure_host,) if insecure_host else ())
    return RegistryClient(hosts)


def build_manifest(config: oci.Descriptor, layers: list[oci.Descriptor]) -> bytes:
    """The artifact's OCI image manifest, canonical JSON (its digest is reproducible)."""
    obj: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "artifactType": vmcontract.ARTIFACT_TYPE,
        "config": config.to_json(), "layers": [layer.to_json() for layer in layers]}
    return oci.canonical_json(obj)


def layer_media_type(name: str) -> str:
    base = vmcontract.LAYER_MEDIA_TYPES[name]
    return base + ZSTD_SUFFIX if name in COMPRESSED else base


def _compress(source: Path, target: Path) -> None:
    import zstandard
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with source.open("rb") as src, target.open("wb") as dst:
        compressor.copy_stream(src, dst)


def push_image(directory: Path, ref: str, *, insecure: bool = False,
               progress: Progress = lambda _: None) -> str:
    """Push a verified image directory to ``ref`` (``host/repo:tag``); returns the manifest
    digest. Raises ImageBuildError (the directory does not verify), ContainerdError (registry)."""
    try:
        cache.verify_image(directory, digests=True)
    except (OSError, ValueError) as e:
        raise ImageBuildError(f"not pushing {directory}: {e}") from None
    reference = as_reference(ref, "latest")
    client = _client(reference.domain if insecure else None)
    files = _Files()
    with tempfile.TemporaryDirectory(prefix="pydesk-vm-push.") as tmp:
        layers = []
        for name in LAYER_ORDER:
            path = directory / name
            if name in COMPRESSED:
                progress(f"compressing {name} (zstd)")
                path = Path(tmp) / (name + ".zst")
                _compress(directory / name, path)
            layers.append(files.add(path, layer_media_type(name), {TITLE: name}))
        config = files.add(directory / vmcontract.IMAGE_INFO_FILE, vmcontract.ARTIFACT_TYPE, {})
        config = oci.Descriptor(config.media_type, config.digest, config.size)
        for desc in (config, *layers):
            progress(f"pushing {desc.annotations.get(TITLE, 'config')} "
                     f"({desc.size >> 20} MiB)")
            client.push_blob(reference, desc, files)
        manifest = build_manifest(config, layers)
        digest = client.push_manifest(reference, reference.tag or reference.reference,
                                      oci.OCI_MANIFEST, manifest)
    progress(f"pushed {reference.name}@{digest}")
    return digest


def parse_artifact(data: bytes) -> tuple[oci.Descriptor, dict[str, oci.Descriptor]]:
    """(config, {file name: layer}) of a pushed image manifest. Raises ValueError."""
    obj = json.loads(data)
    if not isinstance(obj, dict) or obj.get("artifactType") != vmcontract.ARTIFACT_TYPE:
        raise ValueError(f"not a pydesk VM image (artifactType {obj.get('artifactType')!r})")
    manifest = oci.Manifest.parse(data)
    if manifest.config.media_type != vmcontract.ARTIFACT_TYPE:
        raise ValueError(f"unexpected config media type {manifest.config.media_type!r}")
    layers: dict[str, oci.Descriptor] = {}
    for layer in manifest.layers:
        name = layer.annotations.get(TITLE, "")
        if name not in vmcontract.LAYER_MEDIA_TYPES or layer.media_type != layer_media_type(name):
            raise ValueError(f"unexpected layer {name!r} ({layer.media_type})")
        layers[name] = layer
    missing = set(vmcontract.LAYER_MEDIA_TYPES) - set(layers)
    if missing:
        raise ValueError(f"the artifact lacks {', '.join(sorted(missing))}")
    return manifest.config, layers


def _extract(store: FileStore, desc: oci.Descriptor, target: Path, compressed: bool) -> None:
    with store.reader_at(desc.digest) as reader, target.open("wb") as out:
        if compressed:
            import zstandard
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            for offset in range(0, reader.size, CHUNK):
                out.write(decompressor.decompress(reader.read_at(offset, CHUNK)))
        else:
            for offset in range(0, reader.size, CHUNK):
                out.write(reader.read_at(offset, CHUNK))


def pull_image(ref: str, *, insecure: bool = False,
               progress: Progress = lambda _: None) -> Path:
    """Fetch ``ref`` into the image cache; returns the image directory (already there when the
    cache holds that image). Raises ImageBuildError (not a valid pydesk image), ContainerdError
    (registry: NotFound, Unauthorized, Unavailable, FailedPrecondition on a digest mismatch)."""
    reference = as_reference(ref, "latest")
    client = _client(reference.domain if insecure else None)
    desc = client.resolve(reference)
    data = client.fetch_manifest(reference, desc)
    try:
        config, layers = parse_artifact(data)
        info = cache.ImageInfo.parse(client.fetch_blob(reference, config))
    except ValueError as e:
        raise ImageBuildError(f"{ref}: {e}") from None
    final = cache.cache_root() / "images" / f"{info.arch}-{info.image_key[:16]}"
    with contextlib.suppress(OSError, ValueError):
        cache.verify_image(final)
        os.utime(final)  # used now: kept by the cache's pruning
        progress(f"{ref} is already in the cache")
        return final
    with cache.build_lock(progress):
        def fetch(tmp: Path) -> None:
            store = FileStore(tmp / ".content")
            for name, layer in layers.items():
                progress(f"pulling {name} ({layer.size >> 20} MiB)")
                client.fetch_blob_into(reference, layer, store)
                _extract(store, layer, tmp / name, layer.media_type.endswith(ZSTD_SUFFIX))
            shutil.rmtree(tmp / ".content")
            try:
                cache.verify_image(tmp, digests=True)
            except (OSError, ValueError) as e:
                raise ImageBuildError(f"{ref}: {e}") from None
        cache.build_into(final, fetch)
    progress(f"pulled {ref} ({desc.digest})")
    return final


__all__ = ["ContainerdError", "build_manifest", "parse_artifact", "pull_image", "push_image"]
