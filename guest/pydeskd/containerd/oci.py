"""OCI image types shared by the whole containerd layer: media types, descriptors, platforms,
manifests, indexes and image configs, parsed from JSON into frozen dataclasses.

What it is for: the registry client, the image store, save/load and the unpacker all speak of the
same objects; they are defined and validated once, here. Docker's v2 schema 2 media types are
accepted wherever their OCI equivalents are (they have the same shape).

What it must never do: perform I/O, or accept a document without checking the fields later code
relies on (digests are validated with the content store's gate before they can become paths).
"""

from __future__ import annotations

import json
import platform as _host_platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydeskd.containerd.content import validate_digest
from pydeskd.containerd.errors import InvalidArgument

# Manifests and indexes.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
# The Accept list for manifest requests, most wanted first (what Docker sends, minus schema 1).
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

# Configs.
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
CONFIG_TYPES = frozenset({DOCKER_CONFIG, OCI_CONFIG})

# Layers.
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
# Uncompressed Docker layers: what Docker's containerd store names layers of pre-25 `docker save`.
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
LAYER_TYPES = frozenset({
    DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN,
    OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD,
    OCI_LAYER_NONDIST, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST_ZSTD,
})

# Attestation manifests in an index (BuildKit's provenance/SBOM) are not runnable images.
ANNOTATION_REFERENCE_TYPE = "vnd.docker.reference.type"
ATTESTATION_MANIFEST = "attestation-manifest"
# The tag an OCI layout or a pushed index entry names.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


class Compression:
    """How a layer blob is compressed, from its media type."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"

    @staticmethod
    def of(media_type: str) -> str:
        if media_type.endswith("+zstd"):
            return Compression.ZSTD
        if media_type.endswith("gzip"):
            return Compression.GZIP
        if media_type in LAYER_TYPES:
            return Compression.NONE
        raise InvalidArgument(f"not a layer media type: {media_type!r}")


# ---------------------------------------------------------------------------------------------
# Platforms

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
                 "armel": "arm", "i386": "386", "i686": "386"}


@dataclass(frozen=True)
class Platform:
    """An OCI platform, normalized as containerd normalizes it (``aarch64`` -> ``arm64``)."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @staticmethod
    def parse(text: str) -> Platform:
        """``linux/arm64/v8``, ``linux/amd64``, ``arm64`` (OS defaults to linux)."""
        parts = text.strip().lower().split("/")
        if not all(parts) or len(parts) > 3:
            raise InvalidArgument(f"invalid platform {text!r}: want os/arch[/variant]")
        if len(parts) == 1:
            parts = ["linux", *parts]
        return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "").normalized()

    @staticmethod
    def from_json(obj: Any) -> Platform:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("os"), str) \
                or not isinstance(obj.get("architecture"), str):
            raise InvalidArgument("invalid platform: want an object with os and architecture")
        features = obj.get("os.features") or ()
        return Platform(obj["os"], obj["architecture"], str(obj.get("variant") or ""),
                        str(obj.get("os.version") or ""), tuple(map(str, features))).normalized()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture.lower(), self.architecture.lower())
        variant = self.variant.lower()
        if arch == "arm64" and variant in ("8", "v8"):
            variant = ""
        if arch == "arm" and variant in ("5", "6", "7", "8"):
            variant = "v" + variant
        if arch == "arm" and not variant:
            variant = "v7"
        if arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(self.os.lower(), arch, variant, self.os_version, self.os_features)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @staticmethod
    def host() -> Platform:
        return Platform("linux", _host_platform.machine()).normalized()


class PlatformMatcher:
    """Which index entries can run where, best first (containerd's ``platforms.Only``).

    The wanted platform first; then what it can also run: ``linux/amd64`` runs ``386``;
    ``linux/arm64`` runs ``arm/v8`` down to ``arm/v5``; ``linux/arm/v7`` runs ``v6`` and ``v5``.
    An entry without a platform never matches: in practice such entries are attestations.
    """

    def __init__(self, wanted: Platform) -> None:
        self.wanted = wanted.normalized()
        arch, variant = self.wanted.architecture, self.wanted.variant
        order: list[tuple[str, str]] = [(arch, variant)]
        if arch == "amd64":
            order.append(("386", ""))
        elif arch == "arm64":
            order += [("arm", f"v{n}") for n in range(8, 4, -1)]
        elif arch == "arm":
            level = _arm_level(variant)
            order = [("arm", f"v{n}") for n in range(level, 4, -1)]
        self._order = order

    def rank(self, candidate: Platform) -> int | None:
        """0 for the best match, higher for worse, ``None`` if it cannot run."""
        c = candidate.normalized()
        if c.os != self.wanted.os:
            return None
        key = (c.architecture, c.variant)
        return self._order.index(key) if key in self._order else None

    def matches(self, candidate: Platform) -> bool:
        return self.rank(candidate) is not None


def _arm_level(variant: str) -> int:
    if len(variant) == 2 and variant[0] == "v" and variant[1] in "5678":
        return int(variant[1])
    raise InvalidArgument(f"invalid platform variant {variant!r} for arm: want v5, v6, v7 or v8")


# ---------------------------------------------------------------------------------------------
# Descriptors, manifests, indexes


def _str(obj: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {what}: {key!r} must be a string")
    return value


def _annotations(obj: Mapping[str, Any], what: str) -> Mapping[str, str]:
    value = obj.get("annotations") or {}
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"invalid {what}: annotations must map strings to strings")
    return dict(value)


@dataclass(frozen=True)
class Descriptor:
    """Points at a blob: its media type, digest and size (plus optional platform/annotations)."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    @staticmethod
    def from_json(obj: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(obj, Mapping):
            raise InvalidArgument(f"invalid {what}: not an object")
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"invalid {what}: size must be a non-negative integer")
        digest = _str(obj, "digest", what)
        try:
            validate_digest(digest)
        except InvalidArgument as e:
            raise InvalidArgument(f"invalid {what}: {e}") from None
        platform = Platform.from_json(obj["platform"]) if obj.get("platform") else None
        urls = obj.get("urls") or ()
        return Descriptor(_str(obj, "mediaType", what, ""), digest, size,
                          _annotations(obj, what), platform, tuple(map(str, urls)))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @property
    def is_attestation(self) -> bool:
        return self.annotations.get(ANNOTATION_REFERENCE_TYPE) == ATTESTATION_MANIFEST


def _load(data: bytes, what: str) -> Mapping[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"invalid {what}: not JSON ({e})") from None
    if not isinstance(obj, Mapping):
        raise InvalidArgument(f"invalid {what}: not a JSON object")
    if obj.get("schemaVersion") not in (2, None):
        raise InvalidArgument(f"unsupported {what} schemaVersion {obj.get('schemaVersion')!r}"
                              " (Docker schema 1 images are not supported)")
    return obj


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config and the layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None

    @staticmethod
    def parse(data: bytes, media_type: str = "") -> Manifest:
        obj = _load(data, "manifest")
        media_type = str(obj.get("mediaType") or media_type or OCI_MANIFEST)
        if media_type not in MANIFEST_TYPES:
            raise InvalidArgument(f"invalid manifest: unexpected media type {media_type!r}")
        layers = obj.get("layers")
        if not isinstance(layers, Sequence) or isinstance(layers, str | bytes):
            raise InvalidArgument("invalid manifest: layers must be a list")
        subject = obj.get("subject")
        return Manifest(
            media_type,
            Descriptor.from_json(obj.get("config"), "manifest config"),
            tuple(Descriptor.from_json(layer, "manifest layer") for layer in layers),
            _annotations(obj, "manifest"),
            Descriptor.from_json(subject, "manifest subject") if subject else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "config": self.config.to_json(),
                               "layers": [layer.to_json() for layer in self.layers]}
        if self.subject is not None:
            out["subject"] = self.subject.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Index:
    """An image index or Docker manifest list: one manifest per platform (plus attestations)."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def parse(data: bytes, media_type: str = "") -> Index:
        obj = _load(data, "index")
        media_type = str(obj.get("mediaType") or media_type or OCI_INDEX)
        if media_type not in INDEX_TYPES:
            raise InvalidArgument(f"invalid index: unexpected media type {media_type!r}")
        manifests = obj.get("manifests")
        if not isinstance(manifests, Sequence) or isinstance(manifests, str | bytes):
            raise InvalidArgument("invalid index: manifests must be a list")
        return Index(media_type,
                     tuple(Descriptor.from_json(m, "index entry") for m in manifests),
                     _annotations(obj, "index"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "manifests": [m.to_json() for m in self.manifests]}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def select(self, matcher: PlatformMatcher) -> Descriptor:
        """The best runnable manifest for ``matcher``; attestations are never chosen."""
        best: tuple[int, int, Descriptor] | None = None
        for position, entry in enumerate(self.manifests):
            if entry.is_attestation or entry.platform is None \
                    or entry.media_type not in MANIFEST_TYPES | INDEX_TYPES | {""}:
                continue
            rank = matcher.rank(entry.platform)
            if rank is not None and (best is None or (rank, position) < best[:2]):
                best = (rank, position, entry)
        if best is None:
            available = sorted({str(m.platform) for m in self.manifests
                                if m.platform and not m.is_attestation})
            raise InvalidArgument(
                f"no matching manifest for {matcher.wanted} in the manifest list entries"
                f" (available: {', '.join(available) or 'none'})")
        return best[2]


def sniff_media_type(data: bytes) -> str:
    """The media type a manifest-like document declares, or guesses from its shape."""
    obj = _load(data, "manifest")
    declared = obj.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if "manifests" in obj:
        return OCI_INDEX
    if "config" in obj and "layers" in obj:
        return OCI_MANIFEST
    raise InvalidArgument("invalid manifest: neither an image manifest nor an index")


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config the engine uses; ``raw`` keeps the whole document."""

    platform: Platform
    diff_ids: tuple[str, ...]
    config: Mapping[str, Any]
    history: tuple[Mapping[str, Any], ...]
    created: str
    raw: Mapping[str, Any]

    @staticmethod
    def parse(data: bytes) -> ImageConfig:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidArgument(f"invalid image config: not JSON ({e})") from None
        if not isinstance(obj, Mapping):
            raise InvalidArgument("invalid image config: not a JSON object")
        rootfs = obj.get("rootfs")
        if not isinstance(rootfs, Mapping) or rootfs.get("type") != "layers" \
                or not isinstance(rootfs.get("diff_ids"), list):
            raise InvalidArgument("invalid image config: rootfs must be of type layers")
        diff_ids = tuple(rootfs["diff_ids"])
        for diff_id in diff_ids:
            try:
                validate_digest(diff_id)
            except InvalidArgument as e:
                raise InvalidArgument(f"invalid image config: diff_id {e}") from None
        platform = Platform(str(obj.get("os") or "linux"),
                            str(obj.get("architecture") or "amd64"),
                            str(obj.get("variant") or "")).normalized()
        config = obj.get("config") or {}
        history = obj.get("history") or []
        if not isinstance(config, Mapping) or not isinstance(history, list):
            raise InvalidArgument("invalid image config: config/history have the wrong type")
        return ImageConfig(platform, diff_ids, dict(config),
                           tuple(h for h in history if isinstance(h, Mapping)),
                           str(obj.get("created") or ""), dict(obj))


def canonical_json(obj: Any) -> bytes:
    """Compact JSON as pydesk writes manifests and configs it creates (stable key order)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
