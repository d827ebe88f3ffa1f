"""Pull: a reference in a registry -> verified blobs in the content store -> unpacked snapshots ->
an image record, as ``docker pull`` does it with the containerd image store.

The steps, each reported through ``progress``:

1. resolve the reference to a descriptor (index or manifest) -- this is the image ID;
2. fetch the index (kept whole, as Docker keeps it) and choose the platform's manifest, skipping
   attestations; fetch that manifest and its config;
3. fetch the layers, several at once; a layer already in the store is "Already exists", one that
   another pull is downloading is downloaded once;
4. unpack the layers into committed overlay snapshots named by chainID (shared by every image
   with the same lower layers), and label the config with the top chainID so the GC keeps them;
5. point the name at the target; a tag moved off another image leaves that one dangling.

Everything a pull writes is held by a lease from before it is committed until the image record
exists, so neither a concurrent prune nor a crash half-way can remove it; after a crash the lease
expires, and a new pull finds the verified blobs and resumes the partial ones. The GC lock
(shared, and across processes) is taken only for short steps: putting a blob under the lease,
and unpack + record; the download itself never holds up a collection.

What it must never do: record an image whose blobs are not all present and verified, or whose
layers did not unpack to the diff_ids its config names.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

from pydeskd.containerd import oci
from pydeskd.containerd.content import Info
from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from pydeskd.containerd.images import read_blob
from pydeskd.containerd.leases import KIND_CONTENT, KIND_INGESTS, Lease, snapshot_kind
from pydeskd.containerd.progress import Event, Reporter, Status, discard
from pydeskd.containerd.reference import Reference
from pydeskd.containerd.registry import RegistryClient, as_reference
from pydeskd.containerd.registry.fetch import ingest_ref
from pydeskd.containerd.stores import (
    LABEL_DISTRIBUTION_SOURCE,
    LABEL_GC_SNAPSHOT,
    SNAPSHOTTER,
    Stores,
)
from pydeskd.containerd.unpack import chain_ids, unpack_layers

MAX_INDEX_DEPTH = 8


@dataclass(frozen=True)
class PullResult:
    """``target`` is what the name points at (its digest is the image ID); ``manifest`` and
    ``config`` are the chosen platform's; ``downloaded`` says whether anything new was fetched
    (Docker's "Downloaded newer image" against "Image is up to date")."""

    name: str
    reference: Reference
    target: oci.Descriptor
    manifest: oci.Descriptor
    config: oci.ImageConfig
    chain_id: str
    downloaded: bool


class _Pull:
    def __init__(self, stores: Stores, client: RegistryClient, reference: Reference,
                 lease: Lease, reporter: Reporter) -> None:
        self.stores = stores
        self.client = client
        self.reference = reference
        self.lease = lease
        self.reporter = reporter
        self.downloaded = False

    def _have(self, desc: oci.Descriptor) -> bool:
        try:
            return self.stores.content.info(desc.digest).size == desc.size
        except NotFound:
            return False

    def _hold(self, desc: oci.Descriptor) -> bool:
        """Put ``desc`` under the pull's lease (before it is committed: a crash keeps it); say
        whether the store already has it. Under the GC lock, briefly: a collection that began
        before the lease held it may not sweep a blob this pull is about to use, and one that
        begins after sees the lease."""
        with self.stores.gc.lock.shared():
            self.stores.leases.add_resource(self.lease.id, KIND_CONTENT, desc.digest)
            return self._have(desc)

    def _label_source(self, desc: oci.Descriptor) -> None:
        """Remember which repository of which registry has this blob (for cross-repo mounts)."""
        key = LABEL_DISTRIBUTION_SOURCE + self.reference.domain
        info = self.stores.content.info(desc.digest)
        repos = [r for r in info.labels.get(key, "").split(",") if r]
        if self.reference.path not in repos:
            repos.append(self.reference.path)
            self.stores.content.update(Info(desc.digest, 0, 0, 0, {key: ",".join(repos)}),
                                       [f"labels.{key}"])

    def document(self, desc: oci.Descriptor) -> bytes:
        """A manifest, index or config: from the store, or fetched, verified and stored."""
        if self._hold(desc):
            self._label_source(desc)
            return read_blob(self.stores.content, desc)
        if desc.media_type not in oci.MANIFEST_TYPES | oci.INDEX_TYPES:
            # A config is a blob: fetched like a layer (verified, deduplicated across pulls).
            self.downloaded |= self.client.fetch_blob_into(self.reference, desc,
                                                           self.stores.content)
            self._label_source(desc)
            return read_blob(self.stores.content, desc)
        data = self.client.fetch_manifest(self.reference, desc)
        # Documents are small: each pull writes its own ingest (a unique ref, so two pulls of
        # one image never wait on each other's lock) and the second commit is AlreadyExists.
        ref = f"pull-doc-{uuid.uuid4().hex}"
        try:
            writer = self.stores.content.writer(ref, desc.size, desc.digest)
        except AlreadyExists:  # another pull stored it since we looked
            return data
        committed = False
        try:
            writer.write(data)
            with contextlib.suppress(AlreadyExists):
                writer.commit(desc.size, desc.digest)
            committed = True
        finally:
            writer.close()
            if not committed:
                with contextlib.suppress(NotFound):
                    self.stores.content.abort(ref)
        self.downloaded = True
        self._label_source(desc)
        return data

    def platform_manifest(self, target: oci.Descriptor,
                          matcher: oci.PlatformMatcher) -> tuple[oci.Descriptor, oci.Manifest]:
        desc = target
        for _ in range(MAX_INDEX_DEPTH):
            data = self.document(desc)
            media_type = desc.media_type or oci.sniff_media_type(data)
            if media_type in oci.INDEX_TYPES:
                try:
                    desc = oci.Index.parse(data, media_type).select(matcher)
                except InvalidArgument as e:
                    raise NotFound(f"{self.reference.familiar}: {e}") from None
                continue
            return desc, oci.Manifest.parse(data, media_type)
        raise FailedPrecondition(f"{self.reference.familiar}: image indexes nested too deeply")

    def layers(self, manifest: oci.Manifest) -> None:
        todo = []
        for layer in manifest.layers:
            if self._hold(layer):
                self.reporter(Event(layer.digest, Status.ALREADY_EXISTS))
            else:
                # The partial download is kept across a crash (GC spares leased ingests).
                self.stores.leases.add_resource(self.lease.id, KIND_INGESTS,
                                                ingest_ref(layer.digest))
                todo.append(layer)
        if todo:
            fetched = self.client.fetch_all(self.reference, todo, self.stores.content,
                                            self.reporter)
            self.downloaded = self.downloaded or any(fetched)
        for layer in manifest.layers:
            self._label_source(layer)


def pull(stores: Stores, client: RegistryClient, ref: Reference | str, *,
         platform: oci.Platform | None = None, reporter: Reporter = discard,
         unpack: bool = True) -> PullResult:
    """Pull ``ref`` (a tag defaults to ``latest``) for ``platform`` (the host's by default).

    Raises NotFound (no such image or tag; no manifest for the platform), Unauthorized,
    Unavailable (the registry cannot be reached; what was verified is kept for the next pull),
    FailedPrecondition (a digest or diff_id mismatch), InvalidArgument (a malformed reference
    or document).
    """
    reference = as_reference(ref, "latest")
    matcher = oci.PlatformMatcher(platform or oci.Platform.host())
    # Downloads run under the lease only, not the GC lock: a slow pull must not hold up
    # `docker rmi` or a prune (nor, through the lock's writer priority, every other pull).
    with stores.leases.hold(labels={"pydesk/pull": reference.name}) as lease:
        work = _Pull(stores, client, reference, lease, reporter)
        reporter(Event(reference.reference, Status.RESOLVING, detail=reference.familiar))
        target = client.resolve(reference)
        manifest_desc, manifest = work.platform_manifest(target, matcher)
        config = oci.ImageConfig.parse(work.document(manifest.config))
        if platform is not None and not matcher.matches(config.platform):
            raise NotFound(
                f"image with reference {reference.familiar} was found but does not match the "
                f"specified platform: wanted {matcher.wanted}, actual: {config.platform}")
        work.layers(manifest)
        chain = ""
        name = str(reference)
        with stores.gc.lock.shared():
            if unpack and manifest.layers:
                chain = unpack_into_snapshots(stores, lease, manifest, config, reporter)
            stores.images.put(name, target)
        return PullResult(name, reference, target, manifest_desc, config, chain,
                          work.downloaded)


def unpack_into_snapshots(stores: Stores, lease: Lease, manifest: oci.Manifest,
                          config: oci.ImageConfig, reporter: Reporter) -> str:
    """Unpack ``manifest``'s layers (the caller holds the GC lock shared and ``lease``); label
    the config with the top chainID so the GC keeps the chain while the image exists."""
    for chain in chain_ids(config.diff_ids):
        # Held before they are committed: a committed snapshot is no root of its own.
        stores.leases.add_resource(lease.id, snapshot_kind(SNAPSHOTTER), chain)
    top = unpack_layers(manifest, config, stores.content, stores.snapshotter, reporter)
    stores.content.update(Info(manifest.config.digest, 0, 0, 0, {LABEL_GC_SNAPSHOT: top}),
                          [f"labels.{LABEL_GC_SNAPSHOT}"])
    return top
