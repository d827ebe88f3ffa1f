"""``docker import``: a root filesystem tar becomes a one-layer image.

What it is for: the tar (plain, gzip or zstd; detected from its bytes) is read once as a
stream: its uncompressed bytes are hashed (the layer's diff_id) and recompressed with gzip into
an ingest, so the layer blob is stored the way Docker stores it. Then a config (os,
architecture, the ``changes`` given in Dockerfile syntax, a history entry "Imported from -")
and an OCI manifest are written, and the image record is created -- named, or dangling when no
name is given -- all under a lease, as every other import.

What it must never do: unpack the tar here (unpacking, with its confinement rules, is the
snapshotter's job when a container is created), keep the whole tar in memory (decompression is
bounded: a few KiB of zstd may be gigabytes of tar, which pass through a piece at a time), or
accept a stream that is not a tar or stops before its end.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import shlex
import tarfile
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import IO, Any

from pydeskd.containerd import oci
from pydeskd.containerd.archive.compression import detect
from pydeskd.containerd.content import Store
from pydeskd.containerd.errors import AlreadyExists, InvalidArgument, NotFound
from pydeskd.containerd.imageio._archive import read_full
from pydeskd.containerd.imageio._inflate import CorruptStream, Inflater
from pydeskd.containerd.imageio._load import (
    LABEL_UNCOMPRESSED,
    CommitContext,
    LoadedImage,
    guarded,
)
from pydeskd.containerd.images import normalize_name
from pydeskd.containerd.progress import Event, Status

_CHUNK = 1 << 20
_BLOCK = 512
_SIMPLE = {"USER": "User", "WORKDIR": "WorkingDir", "STOPSIGNAL": "StopSignal"}


def _check_tar_start(block: bytes) -> None:
    if len(block) < _BLOCK:
        raise InvalidArgument("the imported archive is not a tar: it is too short")
    if block.strip(b"\0") == b"":
        return  # an empty tar: two zero blocks
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        raise InvalidArgument(f"the imported archive is not a tar: {e}") from None


# --- changes (Dockerfile instructions) -----------------------------------------------------


def _exec_form(rest: str) -> list[str]:
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", rest]


def _pairs(rest: str, instruction: str) -> list[tuple[str, str]]:
    words = shlex.split(rest)
    if not words:
        raise InvalidArgument(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        # The legacy form: "ENV key value with spaces".
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise InvalidArgument(f"{instruction} must have two arguments")
        return [(key, value.strip())]
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{instruction} names must be followed by '=': {word!r}")
        pairs.append((key, value))
    return pairs


def apply_changes(config: dict[str, Any], changes: Sequence[str]) -> dict[str, Any]:
    """Apply Dockerfile-syntax ``changes`` (as ``docker import --change``) to a config dict.

    CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR and STOPSIGNAL are allowed.
    Raises InvalidArgument for any other instruction or a malformed one.
    """
    config = dict(config)
    for change in changes:
        instruction, _, rest = change.strip().partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "CMD":
            config["Cmd"] = _exec_form(rest)
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = _exec_form(rest)
        elif instruction == "ENV":
            env = [e for e in config.get("Env", [])]
            for key, value in _pairs(rest, "ENV"):
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
            config["Env"] = env
        elif instruction == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(rest, "LABEL"))
            config["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for port in rest.split():
                number, _, proto = port.partition("/")
                if not number.isdigit() or proto not in ("", "tcp", "udp", "sctp"):
                    raise InvalidArgument(f"invalid port in EXPOSE: {port!r}")
                ports[f"{number}/{proto or 'tcp'}"] = {}
            config["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            volumes = dict(config.get("Volumes") or {})
            paths = _exec_form(rest) if rest.startswith("[") else rest.split()
            if paths[:2] == ["/bin/sh", "-c"]:
                raise InvalidArgument(f"invalid VOLUME: {rest!r}")
            volumes.update({p: {} for p in paths})
            config["Volumes"] = volumes
        elif instruction in _SIMPLE and rest:
            config[_SIMPLE[instruction]] = rest
        else:
            raise InvalidArgument(f"{instruction or change!r} is not a valid change command")
    return config


# --- the import ------------------------------------------------------------------------------


def _write_doc(content: Store, data: bytes, protect: Any) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    protect(digest)
    try:
        with content.writer(f"import-{uuid.uuid4().hex}", len(data), digest) as writer:
            writer.write(data)
            writer.commit(len(data), digest)
    except AlreadyExists:
        pass


def import_rootfs(stream: IO[bytes], content: Store, ctx: CommitContext, *,
                  name: str | None = None, changes: Sequence[str] = (), message: str = "",
                  platform: oci.Platform | None = None, source: str = "-",
                  labels: Mapping[str, str] | None = None) -> LoadedImage:
    """Import a root filesystem tar from ``stream`` as an image.

    ``name`` (optional; the image is dangling without it), ``changes`` (Dockerfile
    instructions), ``message`` (the history comment; "Imported from <source>" by default),
    ``platform`` (the host's by default). Raises InvalidArgument (not a tar, a bad change or
    name; nothing is committed then).
    """
    if name is not None:
        name = normalize_name(name)
    platform = platform or oci.Platform.host()
    base: dict[str, Any] = apply_changes({}, changes)
    # A full block (or all there is), so that a short first read cannot hide the magic bytes.
    head = read_full(stream, _BLOCK)
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    diff_hash, blob_hash = hashlib.sha256(), hashlib.sha256()
    ref = f"import-{uuid.uuid4().hex}"
    size = 0
    start = bytearray()
    with guarded(ctx) as protect:
        writer = content.writer(ref)

        def write(out: bytes) -> None:
            nonlocal size
            blob_hash.update(out)
            writer.write(out)
            size += len(out)

        def consume(tar_bytes: bytes) -> None:
            # At most one CHUNK of tar at a time, whatever the compression ratio.
            if len(start) < _BLOCK:
                start.extend(tar_bytes[:_BLOCK - len(start)])
            diff_hash.update(tar_bytes)
            write(deflater.compress(tar_bytes))

        inflater = Inflater(detect(head), consume)
        try:
            chunk = head
            try:
                while chunk:
                    inflater.feed(chunk)
                    chunk = stream.read(_CHUNK)
                inflater.finish()
            except CorruptStream as e:
                raise InvalidArgument(f"the imported archive is corrupt: {e}") from None
            _check_tar_start(bytes(start))
            write(deflater.flush())
            diff_id = "sha256:" + diff_hash.hexdigest()
            layer_digest = "sha256:" + blob_hash.hexdigest()
            protect(layer_digest)
            with contextlib.suppress(AlreadyExists):
                writer.commit(size, layer_digest, {LABEL_UNCOMPRESSED: diff_id})
        except BaseException:
            writer.close()
            with contextlib.suppress(NotFound):
                content.abort(ref)
            raise
        ctx.reporter(Event(layer_digest, Status.LOADING, size, size))
        created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        config_doc: dict[str, Any] = {
            "architecture": platform.architecture,
            "os": platform.os,
            "created": created,
            "config": base,
            "history": [{"created": created, "comment": message or f"Imported from {source}"}],
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        if platform.variant:
            config_doc["variant"] = platform.variant
        config_bytes = oci.canonical_json(config_doc)
        _write_doc(content, config_bytes, protect)
        manifest = oci.Manifest(
            oci.OCI_MANIFEST,
            oci.Descriptor(oci.OCI_CONFIG, "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                           len(config_bytes)),
            (oci.Descriptor(oci.OCI_LAYER_GZIP, layer_digest, size),))
        manifest_bytes = oci.canonical_json(manifest.to_json())
        _write_doc(content, manifest_bytes, protect)
        target = oci.Descriptor(oci.OCI_MANIFEST,
                                "sha256:" + hashlib.sha256(manifest_bytes).hexdigest(),
                                len(manifest_bytes))
        ctx.images.put(name, target, dict(labels) if labels else None)
    return LoadedImage(name, target.digest)
