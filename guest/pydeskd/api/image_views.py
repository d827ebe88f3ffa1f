"""Docker's JSON shapes for images (``GET /images/json``, ``/images/{name}/json``, ``/history``).

What it is for: the image routes turn image records (``containerd.images.Image``: a name -> an
index or a manifest) into what the docker CLI and docker-py read. The choices, as Docker 29's
containerd image store makes them:

- the **image ID** is the record's target digest (the index for a multi-platform image);
- one summary per image ID; ``RepoTags`` are the familiar tagged names (``busybox:latest``) of
  the records listed, ``RepoDigests`` ``<familiar name>@<target digest>`` per repository;
- the **platform** shown is the host's if the image has it, else the first one present;
- **Size** is the sum of that platform's layer blobs as stored (compressed): the "content size"
  Docker 29 reports. Unpacked sizes are left to ``system df``; ``docker history`` shows the
  unpacked size of each layer's snapshot when it is unpacked (its diff, as Docker does), else the
  compressed blob size;
- ``Created`` is the config's ``created`` (unix seconds in lists, RFC 3339 in inspect).

What it must never do: write to a store, or fail a whole listing because one image's blobs are
missing or unreadable (that image is shown with what is known: zero sizes, no config).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydeskd.containerd import oci
from pydeskd.containerd.errors import ContainerdError, NotFound
from pydeskd.containerd.images import Image, available_manifests, image_manifests
from pydeskd.containerd.service import ImageService
from pydeskd.containerd.unpack import chain_ids

# Docker's zero time.Time, printed where a time is unknown.
ZERO_TIME = "0001-01-01T00:00:00Z"
GRAPH_DRIVER = "overlayfs"


@dataclass(frozen=True)
class PlatformImage:
    """One platform of an image: its manifest descriptor, manifest and config."""

    descriptor: oci.Descriptor
    manifest: oci.Manifest
    config: oci.ImageConfig

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.manifest.layers)


def platform_image(svc: ImageService, target: oci.Descriptor) -> PlatformImage | None:
    """The host's platform of ``target``, else the first platform present, else None."""
    with contextlib.suppress(ContainerdError):
        return PlatformImage(*image_manifests(svc.stores.content, target,
                                              oci.PlatformMatcher(svc.platform)))
    with contextlib.suppress(ContainerdError):
        for desc in available_manifests(svc.stores.content, target):
            with contextlib.suppress(ContainerdError):
                return PlatformImage(*image_manifests(svc.stores.content, desc))
    return None


def unix_time(text: str) -> int:
    """RFC 3339 (nanoseconds allowed) -> unix seconds; 0 when absent or unreadable."""
    if not text:
        return 0
    try:
        head, frac_sep, rest = text.partition(".")
        if frac_sep:  # Python reads at most 6 fractional digits: drop the rest of them
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = head + "." + rest[:min(digits, 6)] + rest[digits:]
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def rfc3339(timestamp: float) -> str:
    """Unix seconds -> RFC 3339 with nanoseconds, as Go prints ``time.Time`` in JSON."""
    if timestamp <= 0:
        return ZERO_TIME
    when = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}000Z"


def repo_tags(records: Iterable[Image]) -> list[str]:
    out: list[str] = []
    for record in records:
        ref = record.reference
        if ref is not None and ref.tag is not None and ref.familiar not in out:
            out.append(ref.familiar)
    return out


def repo_digests(records: Iterable[Image]) -> list[str]:
    out: list[str] = []
    for record in records:
        ref = record.reference
        if ref is None:
            continue
        text = f"{ref.familiar_name}@{record.id}"
        if text not in out:
            out.append(text)
    return out


def config_labels(svc: ImageService, image: Image) -> Mapping[str, str]:
    """The image config's labels (what ``--filter label=`` matches, as Docker)."""
    found = platform_image(svc, image.target)
    labels = found.config.config.get("Labels") if found is not None else None
    return dict(labels) if isinstance(labels, Mapping) else {}


def group_by_id(records: Sequence[Image]) -> list[list[Image]]:
    """Records grouped by image ID, in first-seen order."""
    groups: dict[str, list[Image]] = {}
    for record in records:
        groups.setdefault(record.id, []).append(record)
    return list(groups.values())


# The container-config fields Docker returned in image configs before API 1.50, in its order.
_LEGACY_CONFIG: tuple[tuple[str, Any], ...] = (
    ("Hostname", ""), ("Domainname", ""), ("User", ""), ("AttachStdin", False),
    ("AttachStdout", False), ("AttachStderr", False), ("Tty", False), ("OpenStdin", False),
    ("StdinOnce", False), ("Env", None), ("Cmd", None), ("Image", ""), ("Volumes", None),
    ("WorkingDir", ""), ("Entrypoint", None), ("OnBuild", None), ("Labels", None))


def legacy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """An image config as API < 1.50 shows it: every container-config field present."""
    out = {key: config.get(key, default) for key, default in _LEGACY_CONFIG}
    out.update((k, v) for k, v in config.items() if k not in out)
    return out


def summary(svc: ImageService, records: Sequence[Image], *,
            virtual_size: bool = False) -> dict[str, Any]:
    """One ``GET /images/json`` entry for the records of one image ID (``virtual_size``: the
    field API < 1.44 clients read)."""
    first = records[0]
    found = platform_image(svc, first.target)
    labels: Any = found.config.config.get("Labels") if found is not None else None
    size = found.size if found is not None else 0
    out: dict[str, Any] = {
        "Id": first.id,
        "ParentId": "",
        "RepoTags": repo_tags(records),
        "RepoDigests": repo_digests(records),
        "Created": unix_time(found.config.created) if found is not None else 0,
        "Size": size,
        "SharedSize": -1,
        "Labels": dict(labels) if isinstance(labels, Mapping) else {},
        "Containers": -1,
        "Descriptor": first.target.to_json(),
    }
    if virtual_size:
        out["VirtualSize"] = size
    return out


def inspect(svc: ImageService, image: Image, *, legacy: tuple[int, int] = (1, 50),
            ) -> dict[str, Any]:
    """``GET /images/{name}/json``: every name of the image, its platform's config.

    ``legacy`` is the client's API version: below 1.44 ``VirtualSize`` is added, below 1.45
    ``Container``/``ContainerConfig``, below 1.50 the config shows every container-config
    field, as dockerd did at those versions."""
    records = svc.stores.images.by_digest(image.id)
    found = platform_image(svc, image.target)
    raw: Mapping[str, Any] = found.config.raw if found is not None else {}
    history = found.config.history if found is not None else ()
    comment = str(raw.get("comment") or (history[-1].get("comment") if history else "") or "")
    platform = found.config.platform if found is not None else None
    out: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": repo_tags(records),
        "RepoDigests": repo_digests(records),
        "Parent": "",
        "Comment": comment,
        "Created": (found.config.created if found is not None and found.config.created
                    else ZERO_TIME),
        "DockerVersion": str(raw.get("docker_version") or ""),
        "Author": str(raw.get("author") or ""),
        "Config": dict(found.config.config) if found is not None else None,
        "Architecture": platform.architecture if platform is not None else "",
        "Os": platform.os if platform is not None else "",
        "Size": found.size if found is not None else 0,
        "GraphDriver": {"Name": GRAPH_DRIVER, "Data": None},
        "RootFS": {"Type": "layers",
                   "Layers": list(found.config.diff_ids) if found is not None else []},
        "Metadata": {"LastTagTime": rfc3339(max((r.updated_at for r in records), default=0))},
        "Descriptor": image.target.to_json(),
    }
    # As the config says it, not normalized (Docker shows arm64's "v8").
    config = dict(found.config.config) if found is not None else None
    if legacy < (1, 50) and config is not None:
        out["Config"] = legacy_config(config)
    if legacy < (1, 45):
        out["Container"] = ""
        out["ContainerConfig"] = legacy_config({})
    if legacy < (1, 44):
        out["VirtualSize"] = out["Size"]
    if raw.get("variant"):
        out["Variant"] = str(raw["variant"])
    if raw.get("os.version"):
        out["OsVersion"] = str(raw["os.version"])
    return out


def _layer_size(svc: ImageService, chain: str, blob: oci.Descriptor | None) -> int:
    with contextlib.suppress(ContainerdError, OSError):
        return svc.stores.snapshotter.usage(chain).size
    return blob.size if blob is not None else 0


def history(svc: ImageService, image: Image) -> list[dict[str, Any]]:
    """``GET /images/{name}/history``: newest first; the top entry carries the ID and tags."""
    found = platform_image(svc, image.target)
    if found is None:
        raise NotFound(f"image {image.familiar}: no platform of it is available locally")
    config, layers = found.config, found.manifest.layers
    entries = list(config.history) or [{"created": config.created} for _ in layers]
    chains = chain_ids(config.diff_ids) if config.diff_ids else []
    out: list[dict[str, Any]] = []
    layer_index = 0
    for entry in entries:
        size = 0
        if not entry.get("empty_layer") and layer_index < len(chains):
            blob = layers[layer_index] if layer_index < len(layers) else None
            size = _layer_size(svc, chains[layer_index], blob)
            layer_index += 1
        out.append({"Id": "<missing>", "Created": unix_time(str(entry.get("created") or "")),
                    "CreatedBy": str(entry.get("created_by") or ""), "Tags": None,
                    "Size": size, "Comment": str(entry.get("comment") or "")})
    out.reverse()
    if out:
        out[0]["Id"] = image.id
        out[0]["Tags"] = repo_tags(svc.stores.images.by_digest(image.id)) or None
    return out
