"""From a spooled, hashed ``Archive`` to committed blobs and image records.

What it is for: one verifier and one committer for every archive format pydesk reads:

- an OCI image layout (``oci-layout`` + ``index.json``; Docker 25+ ``docker save`` tars are
  one): every ``index.json`` entry is an image, named by its ``io.containerd.image.name``
  annotation (or an ``org.opencontainers.image.ref.name`` that is a whole reference, not just
  a tag); an index whose other platforms were not saved is fine, a manifest missing its config
  or a layer is not;
- Docker's ``manifest.json`` format (``docker save`` up to Docker 24, and tools that write
  only that file): each entry's config and layers by path; every layer's diff_id is checked
  against the config (as Docker's ``image/tarexport/load.go`` does), and an OCI manifest is
  synthesized with media types from the layers' bytes (uncompressed layers stay uncompressed).

Commit protocol: everything is verified first; then, holding the GC lock shared and a lease,
blobs are committed children first, image records are written, and the lease is dropped.

What it must never do: commit anything when verification fails, or let GC collect a blob
between its commit and the image record that references it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydeskd.containerd import oci
from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.containerd.gc import RWLock
from pydeskd.containerd.imageio._archive import Archive, Member
from pydeskd.containerd.imageio._write import ANNOTATION_IMAGE_NAME
from pydeskd.containerd.images import ImageStore, normalize_name
from pydeskd.containerd.leases import KIND_CONTENT, LeaseManager
from pydeskd.containerd.progress import Event, Reporter, Status, discard
from pydeskd.containerd.reference import parse_reference

LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
_MAX_DEPTH = 8


@dataclass(frozen=True)
class LoadedImage:
    """One image a load created: ``name`` (normalized; None when unnamed) and its ID."""

    name: str | None
    id: str

    @property
    def message(self) -> str:
        """What ``docker load`` prints for it."""
        if self.name is None:
            return f"Loaded image ID: {self.id}"
        return f"Loaded image: {parse_reference(self.name, default_tag=None).familiar}"


@dataclass
class Plan:
    """Blobs to commit (children first), and the records to write."""

    blobs: dict[str, tuple[Member, dict[str, str]]] = field(default_factory=dict)
    layers: set[str] = field(default_factory=set)
    images: list[tuple[str | None, oci.Descriptor]] = field(default_factory=list)
    # OCI layouts: the config digests met while walking, and which index.json entry has each.
    configs_seen: list[str] = field(default_factory=list)
    config_owner: dict[str, oci.Descriptor] = field(default_factory=dict)

    def add(self, member: Member, labels: dict[str, str] | None = None) -> None:
        if member.digest not in self.blobs:
            self.blobs[member.digest] = (member, dict(labels or {}))


@dataclass(frozen=True)
class CommitContext:
    """What a commit needs besides the content store: where records go, and the GC protocol
    (both optional for tests; the daemon always passes them)."""

    images: ImageStore
    leases: LeaseManager | None = None
    gc_lock: RWLock | None = None
    reporter: Reporter = discard


# --- OCI layout --------------------------------------------------------------------------------


def _check_size(member: Member, desc: oci.Descriptor) -> None:
    if member.size != desc.size:
        raise InvalidArgument(
            f"blob {desc.digest} is {member.size} bytes in the archive, its descriptor says"
            f" {desc.size}")


def _walk(archive: Archive, desc: oci.Descriptor, plan: Plan, required: bool, *,
          depth: int = 0, matcher: oci.PlatformMatcher | None = None) -> bool:
    """Plan ``desc`` and what it references; False if it is absent and not required. With a
    ``matcher``, an index contributes only its best present entry for that platform."""
    if depth > _MAX_DEPTH:
        raise InvalidArgument("image indexes nested too deeply")
    member = archive.blob(desc.digest)
    if member is None:
        if required:
            raise InvalidArgument(f"blob {desc.digest} is missing from the archive")
        return False
    _check_size(member, desc)
    media_type = desc.media_type
    if media_type in oci.INDEX_TYPES | oci.MANIFEST_TYPES or not media_type:
        data = Archive.read(member, "manifest")
        media_type = media_type or oci.sniff_media_type(data)
        if media_type in oci.INDEX_TYPES:
            index = oci.Index.parse(data, media_type)
            entries = index.manifests
            if matcher is not None:
                present_entries = tuple(e for e in entries if archive.blob(e.digest) is not None)
                try:
                    entries = (oci.Index(media_type, present_entries).select(matcher),)
                except InvalidArgument as e:
                    raise NotFound(f"index {desc.digest}: {e}") from None
            present = [_walk(archive, entry, plan, False, depth=depth + 1, matcher=matcher)
                       for entry in entries]
            if not any(present):
                raise InvalidArgument(
                    f"index {desc.digest}: none of its manifests is in the archive")
        elif media_type in oci.MANIFEST_TYPES:
            manifest = oci.Manifest.parse(data, media_type)
            _walk(archive, manifest.config, plan, True, depth=depth + 1)
            plan.configs_seen.append(manifest.config.digest)
            if manifest.config.media_type in oci.CONFIG_TYPES and not desc.is_attestation:
                config_member = archive.blob(manifest.config.digest)
                assert config_member is not None
                config = oci.ImageConfig.parse(Archive.read(config_member, "image config"))
                if len(config.diff_ids) != len(manifest.layers):
                    raise InvalidArgument(
                        f"manifest {desc.digest}: {len(manifest.layers)} layers but"
                        f" {len(config.diff_ids)} diff_ids in its config")
            for layer in manifest.layers:
                # Foreign layers (with URLs) are left out of archives on purpose.
                if _walk(archive, layer, plan, not layer.urls, depth=depth + 1):
                    plan.layers.add(layer.digest)
    plan.add(member)
    return True


def _entry_name(entry: oci.Descriptor) -> str | None:
    name = entry.annotations.get(ANNOTATION_IMAGE_NAME)
    if name:
        return normalize_name(name)
    ref_name = entry.annotations.get(oci.ANNOTATION_REF_NAME, "")
    # A bare tag ("latest") names no repository: the image is loaded unnamed.
    if any(c in ref_name for c in ":/@"):
        return normalize_name(ref_name)
    return None


def _platform_of(archive: Archive, entry: oci.Descriptor) -> oci.Platform | None:
    """The platform of a manifest entry, from its config; None for anything else."""
    member = archive.blob(entry.digest)
    if member is None or entry.media_type not in oci.MANIFEST_TYPES:
        return None
    manifest = oci.Manifest.parse(Archive.read(member, "manifest"), entry.media_type)
    config = archive.blob(manifest.config.digest)
    if config is None:
        return None
    return oci.ImageConfig.parse(Archive.read(config, "image config")).platform


def plan_oci(archive: Archive, matcher: oci.PlatformMatcher | None = None) -> Plan:
    layout = archive.get("oci-layout")
    if layout is not None:
        try:
            version = json.loads(Archive.read(layout, "oci-layout")).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if version != "1.0.0":
            raise InvalidArgument(f"unsupported OCI layout version {version!r}")
    member = archive.get("index.json")
    assert member is not None
    index = oci.Index.parse(Archive.read(member, "index.json"), oci.OCI_INDEX)
    if not index.manifests:
        raise InvalidArgument("index.json lists no image")
    plan = Plan()
    for entry in index.manifests:
        if matcher is not None and entry.media_type in oci.MANIFEST_TYPES:
            platform = _platform_of(archive, entry)
            if platform is not None and not matcher.matches(platform):
                continue  # a single-platform image of another platform: not loaded
        plan.configs_seen.clear()
        _walk(archive, entry, plan, True, matcher=matcher)
        target = oci.Descriptor(entry.media_type, entry.digest, entry.size,
                                platform=entry.platform)
        plan.images.append((_entry_name(entry), target))
        for config in plan.configs_seen:
            plan.config_owner.setdefault(config, target)
    if not plan.images:
        assert matcher is not None
        raise NotFound(f"no image in the archive is for platform {matcher.wanted}")
    return plan


def _add_repo_tags(archive: Archive, plan: Plan) -> None:
    """An archive with both index.json and manifest.json: a ``RepoTags`` entry that index.json
    does not name becomes a name of the index.json image holding that config (as containerd's
    importer does), so that tools writing names only in manifest.json lose none."""
    member = archive.get("manifest.json")
    if member is None:
        return
    try:
        entries = json.loads(Archive.read(member, "manifest.json"))
    except ValueError as e:
        raise InvalidArgument(f"invalid manifest.json: {e}") from None
    if not isinstance(entries, list):
        raise InvalidArgument("invalid manifest.json: want a list of images")
    named = {name for name, _ in plan.images if name is not None}
    for entry in entries:
        config = archive.get(entry.get("Config", "")) if isinstance(entry, dict) else None
        target = plan.config_owner.get(config.digest) if config is not None else None
        if target is None:
            continue
        for tag in _str_list(entry.get("RepoTags"), "RepoTags"):
            name = str(parse_reference(tag))
            if name not in named:
                named.add(name)
                plan.images.append((name, target))
    # An image that now has a name needs no unnamed record.
    plan.images = [(n, t) for n, t in plan.images
                   if n is not None or not any(m is not None and u.digest == t.digest
                                               for m, u in plan.images)]


# --- manifest.json ------------------------------------------------------------------------------

_LAYER_TYPES = {"none": oci.OCI_LAYER, "gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD}


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid manifest.json: {what} must be a list of strings")
    return value


def plan_docker(archive: Archive, synthetic: Callable[[bytes], Member],
                matcher: oci.PlatformMatcher | None = None) -> Plan:
    member = archive.get("manifest.json")
    assert member is not None
    try:
        entries = json.loads(Archive.read(member, "manifest.json"))
    except ValueError as e:
        raise InvalidArgument(f"invalid manifest.json: {e}") from None
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument("invalid manifest.json: want a non-empty list of images")
    plan = Plan()
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InvalidArgument("invalid manifest.json: an entry has no Config")
        config_member = archive.get(entry["Config"])
        if config_member is None:
            raise InvalidArgument(f"{entry['Config']!r} named by manifest.json is missing")
        config = oci.ImageConfig.parse(Archive.read(config_member, "image config"))
        if matcher is not None and not matcher.matches(config.platform):
            continue
        paths = _str_list(entry.get("Layers"), "Layers")
        if len(paths) != len(config.diff_ids):
            raise InvalidArgument("invalid manifest, layers length mismatch")
        layers = []
        for i, (path, diff_id) in enumerate(zip(paths, config.diff_ids, strict=True)):
            layer = archive.get(path)
            if layer is None:
                raise InvalidArgument(f"layer {path!r} named by manifest.json is missing")
            if layer.diff_id != diff_id:
                raise InvalidArgument(f"invalid diffID for layer {i}: expected {diff_id!r},"
                                      f" got {layer.diff_id!r}")
            labels = {} if layer.compression == "none" else {LABEL_UNCOMPRESSED: diff_id}
            plan.add(layer, labels)
            plan.layers.add(layer.digest)
            layers.append(oci.Descriptor(_LAYER_TYPES[layer.compression], layer.digest,
                                         layer.size))
        plan.add(config_member)
        manifest = oci.Manifest(oci.OCI_MANIFEST, oci.Descriptor(
            oci.OCI_CONFIG, config_member.digest, config_member.size), tuple(layers))
        manifest_member = synthetic(oci.canonical_json(manifest.to_json()))
        plan.add(manifest_member)
        target = oci.Descriptor(oci.OCI_MANIFEST, manifest_member.digest, manifest_member.size)
        tags = _str_list(entry.get("RepoTags"), "RepoTags")
        for tag in tags:
            ref = parse_reference(tag)
            if ref.digest is not None or ref.tag is None:
                raise InvalidArgument(f"invalid tag {tag!r} in manifest.json")
            plan.images.append((str(ref), target))
        if not tags:
            plan.images.append((None, target))
    if not plan.images:
        assert matcher is not None
        raise NotFound(f"no image in the archive is for platform {matcher.wanted}")
    return plan


def plan_archive(archive: Archive, synthetic: Callable[[bytes], Member],
                 matcher: oci.PlatformMatcher | None = None) -> Plan:
    """The plan for whatever format ``archive`` is in (only ``matcher``'s platform if given).
    Raises InvalidArgument, NotFound (nothing for that platform)."""
    if archive.get("index.json") is not None and (
            archive.get("oci-layout") is not None or archive.get("manifest.json") is None):
        plan = plan_oci(archive, matcher)
        _add_repo_tags(archive, plan)
        return plan
    if archive.get("manifest.json") is not None:
        return plan_docker(archive, synthetic, matcher)
    raise InvalidArgument("invalid image archive: no manifest.json, and not an OCI layout"
                          " (no index.json)")


# --- commit ---------------------------------------------------------------------------------


@contextlib.contextmanager
def guarded(ctx: CommitContext) -> Iterator[Callable[[str], None]]:
    """Hold the GC lock shared and a lease; yields ``protect(digest)`` to add to the lease."""
    lock = ctx.gc_lock.shared() if ctx.gc_lock is not None else contextlib.nullcontext()
    with lock:
        if ctx.leases is None:
            yield lambda digest: None
            return
        leases = ctx.leases
        with leases.hold(labels={"pydesk.io/purpose": "image import"}) as lease:
            yield lambda digest: leases.add_resource(lease.id, KIND_CONTENT, digest)


def commit_plan(archive: Archive, plan: Plan, ctx: CommitContext) -> list[LoadedImage]:
    """Commit every planned blob, then write the records. Returns what was loaded."""
    out: list[LoadedImage] = []
    with guarded(ctx) as protect:
        for digest, (member, labels) in plan.blobs.items():
            protect(digest)
            archive.commit(member, labels)
            if digest in plan.layers:
                ctx.reporter(Event(digest, Status.LOADING, member.size, member.size))
        for name, target in plan.images:
            ctx.images.put(name, target)
            out.append(LoadedImage(name, target.digest))
    return out


def names_of(loaded: Sequence[LoadedImage]) -> list[str]:
    return [i.name for i in loaded if i.name is not None]
