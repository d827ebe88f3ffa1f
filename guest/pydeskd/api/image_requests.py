"""Image request parameters as dockerd reads them, and the store queries the image routes share.

What it is for: ``api.routes.images`` stays a list of handlers; the rules for reading what a
client sent live here, each a pure function tested on its own: ``X-Registry-Auth``, ``platform``,
pull names (``fromImage`` + ``tag``, which may be a digest), Docker's ``filters`` JSON (both
forms), ``until`` times (Go durations, unix seconds, RFC 3339) and prune's ``until``/``label``
selection, save's ``platform`` list, the tags of a repository for ``docker push`` without a
tag, the config digests a push stream leaves out, and ``/distribution/{name}/json``'s answer.

What it must never do: echo ``X-Registry-Auth`` (errors say what is wrong, never what was sent),
or change a store (``registry_data`` only reads from the registry).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydeskd.api import image_views
from pydeskd.containerd import oci
from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.containerd.images import available_manifests, image_manifests
from pydeskd.containerd.reference import Reference, parse_reference
from pydeskd.containerd.registry import Credentials, RegistryClient
from pydeskd.containerd.service import ImageService


def credentials_of(header: str | None) -> Credentials | None:
    """``X-Registry-Auth`` -> credentials (None when absent or empty)."""
    if not header:
        return None
    creds = Credentials.from_registry_auth(header)
    return None if creds.empty else creds


def platform_of(text: str) -> oci.Platform | None:
    """The ``platform`` query parameter (``linux/arm64``; empty: the daemon's own)."""
    return oci.Platform.parse(text) if text.strip() else None


def platforms_of(values: Sequence[str]) -> list[oci.Platform]:
    """The repeated ``platform`` parameter of save/load (API 1.48): each a JSON OCI platform
    (``{"os":"linux","architecture":"arm64"}``, as the docker CLI sends it) or ``os/arch``."""
    out = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                raise InvalidArgument(f"invalid platform {text!r}: not JSON") from None
            out.append(oci.Platform.from_json(obj))
        else:
            out.append(oci.Platform.parse(text))
    return out


def pull_reference(from_image: str, tag: str) -> Reference:
    """moby's naming for ``POST /images/create``: ``tag`` may be a tag or a digest and wins
    over one in ``fromImage``; no tag at all means ``latest``. Raises InvalidArgument."""
    ref = parse_reference(from_image, default_tag=None)
    if tag:
        if tag.startswith("sha256:"):
            ref = Reference(ref.domain, ref.path, None, None).with_digest(tag)
        else:
            ref = ref.with_tag(tag)
    if ref.tag is None and ref.digest is None:
        ref = ref.with_tag("latest")
    return ref


def parse_filters(text: str) -> dict[str, list[str]]:
    """Docker's ``filters`` JSON: ``{"key": {"value": true}}`` (or the old ``{"key": [...]}``)."""
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except ValueError:
        raise InvalidArgument(f"invalid filter: {text!r} is not JSON") from None
    if not isinstance(obj, Mapping):
        raise InvalidArgument("invalid filter: not a JSON object")
    out: dict[str, list[str]] = {}
    for key, values in obj.items():
        if isinstance(values, Mapping):
            out[key] = [str(v) for v, on in values.items() if on]
        elif isinstance(values, list):
            out[key] = [str(v) for v in values]
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return out


def spared_by_filters(svc: ImageService, filters: Mapping[str, Sequence[str]],
                       ) -> Callable[[str], bool] | None:
    """A predicate "the filters keep this image ID", or None when no filter but dangling."""
    until = [filter_time(v) for v in filters.get("until", ())]
    labels, not_labels = filters.get("label", ()), filters.get("label!", ())
    if not (until or labels or not_labels):
        return None
    newest: dict[str, float] = {}
    for record in svc.stores.images.all():
        newest[record.id] = max(newest.get(record.id, 0.0), record.created_at)

    def spared(image_id: str) -> bool:
        if any(newest.get(image_id, 0.0) >= cut for cut in until):
            return True
        if not (labels or not_labels):
            return False
        found = svc.stores.images.by_digest(image_id)
        have = image_views.config_labels(svc, found[0]) if found else {}
        return not all(has_label(have, spec) for spec in labels) or \
            any(has_label(have, spec) for spec in not_labels)

    return spared


def has_label(labels: Mapping[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    return key in labels and (not sep or labels[key] == value)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def filter_time(text: str, now: float | None = None) -> float:
    """Docker's ``until``/``since`` value as unix seconds: a Go duration before now (``24h``,
    ``1h30m``), unix seconds (``1700000000.5``), or an RFC 3339 time. Raises InvalidArgument."""
    now = time.time() if now is None else now
    value = text.strip()
    sign, magnitude = (-1.0, value[1:]) if value.startswith("-") else \
        (1.0, value.removeprefix("+"))
    if magnitude and _DURATION_PART.sub("", magnitude) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(magnitude))
        return now - sign * seconds
    with contextlib.suppress(ValueError):
        return float(value)
    stamp = image_views.unix_time(value)
    if stamp == 0 and not value.startswith(("1970-01-01", "0001-01-01")):
        raise InvalidArgument(f"invalid filter 'until={text}': not a duration or a time")
    return float(stamp)


def tags_of(svc: ImageService, repository: Reference) -> list[Reference]:
    found = []
    for record in svc.stores.images.all():
        ref = record.reference
        if ref is not None and ref.name == repository.name and ref.tag is not None \
                and ref.digest is None:
            found.append(ref)
    if not found:
        raise NotFound(f"An image does not exist locally with the tag: "
                       f"{repository.familiar_name}")
    return found


def config_digests(svc: ImageService, targets: Iterable[oci.Descriptor]) -> set[str]:
    """The config blobs of ``targets``' present platforms (push output lists layers only)."""
    out: set[str] = set()
    for target in targets:
        with contextlib.suppress(NotFound, InvalidArgument):
            for desc in available_manifests(svc.stores.content, target):
                with contextlib.suppress(NotFound, InvalidArgument):
                    out.add(image_manifests(svc.stores.content, desc)[1].config.digest)
    return out


# --- save --------------------------------------------------------------------------------------


def registry_data(client: RegistryClient, ref: Reference) -> dict[str, Any]:
    """``GET /distribution/{name}/json``: the descriptor ``ref`` resolves to and its platforms
    (an index's entries, attestations left out; a manifest's config platform).

    Raises NotFound, Unauthorized, Unavailable as the registry client does."""
    desc = client.resolve(ref)
    data = client.fetch_manifest(ref, desc)
    media_type = desc.media_type or oci.sniff_media_type(data)
    platforms: list[dict[str, Any]] = []
    if media_type in oci.INDEX_TYPES:
        # As the index spells them (the parsed ones are normalized: arm64 loses its "v8").
        raw_entries = json.loads(data).get("manifests") or []
        parsed = oci.Index.parse(data, media_type).manifests
        for entry, raw_entry in zip(parsed, raw_entries, strict=True):
            if entry.platform is not None and not entry.is_attestation:
                platforms.append(dict(raw_entry["platform"]))
    else:
        manifest = oci.Manifest.parse(data, media_type)
        config = oci.ImageConfig.parse(client.fetch_blob(ref, manifest.config))
        raw = config.raw
        platform = {"architecture": str(raw.get("architecture") or ""),
                    "os": str(raw.get("os") or "")}
        if raw.get("variant"):
            platform["variant"] = str(raw["variant"])
        platforms.append(platform)
    return {"Descriptor": {"mediaType": media_type, "digest": desc.digest, "size": desc.size},
            "Platforms": platforms}
