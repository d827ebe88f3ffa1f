"""Push: an image record -> the registry, as ``docker push`` does with the containerd store.

Order matters to a registry: a manifest may only be put once its config and layers are there, and
an index once its manifests are. So for each platform manifest: layers (several at once, each
"Layer already exists", "Mounted from <repo>" when the registry has it in another repository we
pulled it from, or uploaded), then the config, then the manifest by digest; finally the target
under the tag (or by digest for a digest reference).

An index whose platforms are not all in the store (a pull fetches one platform) cannot be pushed
whole: then the platform manifest alone is pushed under the tag, as Docker does when it pushes
"only the platform available locally".

What it must never do: push a manifest before what it references, or read a blob that is not
verified (the content store only holds verified blobs; the registry verifies again on PUT).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydeskd.containerd import oci
from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.containerd.images import available_manifests, image_manifests, read_blob
from pydeskd.containerd.progress import Event, Reporter, Status, discard
from pydeskd.containerd.reference import Reference
from pydeskd.containerd.registry import RegistryClient, as_reference
from pydeskd.containerd.stores import LABEL_DISTRIBUTION_SOURCE, Stores


@dataclass(frozen=True)
class PushResult:
    """``digest`` is what the registry now serves under the tag; ``size`` its manifest's size."""

    reference: Reference
    digest: str
    size: int
    media_type: str


def _sources(stores: Stores, desc: oci.Descriptor, target: Reference) -> list[str]:
    """Repositories of ``target``'s registry that this blob was pulled from (mount candidates)."""
    try:
        labels = stores.content.info(desc.digest).labels
    except NotFound:
        return []
    repos = labels.get(LABEL_DISTRIBUTION_SOURCE + target.domain, "")
    return [f"{target.domain}/{r}" for r in repos.split(",") if r and r != target.path]


class _Push:
    def __init__(self, stores: Stores, client: RegistryClient, target: Reference,
                 reporter: Reporter, max_workers: int) -> None:
        self.stores = stores
        self.client = client
        self.target = target
        self.reporter = reporter
        self.max_workers = max_workers

    def blobs(self, descs: Sequence[oci.Descriptor]) -> None:
        for desc in descs:
            self.reporter(Event(desc.digest, Status.PREPARING))
        with ThreadPoolExecutor(max_workers=max(1, self.max_workers),
                                thread_name_prefix="blob-push") as pool:
            futures = [pool.submit(self.client.push_blob, self.target, d, self.stores.content,
                                   self.reporter, _sources(self.stores, d, self.target))
                       for d in descs]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]

    def manifest(self, desc: oci.Descriptor, tag: str | None) -> None:
        """Push one platform manifest with its blobs, by digest (or under ``tag``)."""
        data = read_blob(self.stores.content, desc)
        manifest = oci.Manifest.parse(data, desc.media_type)
        layers = [layer for layer in manifest.layers if not layer.urls]  # foreign layers stay
        self.blobs(layers)
        self.blobs([manifest.config])
        self.client.push_manifest(self.target, tag or desc.digest, manifest.media_type, data)


def push(stores: Stores, client: RegistryClient, ref: Reference | str, *,
         platform: oci.Platform | None = None, reporter: Reporter = discard,
         max_workers: int = 3) -> PushResult:
    """Push the image named ``ref`` (a tag defaults to ``latest``) to its registry.

    ``platform`` pushes only that platform's manifest. Raises NotFound (no such image, or a
    blob it needs is missing), Unauthorized, Unavailable, InvalidArgument.
    """
    target = as_reference(ref, "latest")
    image = stores.images.get(str(target))
    tag = target.tag if target.digest is None else None
    work = _Push(stores, client, target, reporter, max_workers)
    desc = image.target
    whole_index = desc.media_type in oci.INDEX_TYPES and platform is None
    if whole_index:
        data = read_blob(stores.content, desc)
        entries = [m for m in oci.Index.parse(data, desc.media_type).manifests]
        present = available_manifests(stores.content, desc)
        if {m.digest for m in present} >= {m.digest for m in entries
                                           if m.media_type in oci.MANIFEST_TYPES}:
            for entry in entries:
                if entry.media_type in oci.MANIFEST_TYPES:
                    work.manifest(entry, None)
            digest = client.push_manifest(target, tag or desc.digest, desc.media_type, data)
            return PushResult(target, digest, desc.size, desc.media_type)
    if desc.media_type in oci.INDEX_TYPES or platform is not None:
        matcher = oci.PlatformMatcher(platform or oci.Platform.host())
        try:
            desc, _, _ = image_manifests(stores.content, image.target, matcher)
        except NotFound as e:
            raise NotFound(f"{target.familiar}: no platform of this image is available to "
                           f"push: {e}") from None
    if desc.media_type not in oci.MANIFEST_TYPES:
        raise InvalidArgument(f"{target.familiar}: cannot push a {desc.media_type!r}")
    work.manifest(desc, tag)
    reporter(Event(desc.digest, Status.PUSHED, desc.size, desc.size,
                   detail=f"{tag or desc.digest}: digest: {desc.digest} size: {desc.size}"))
    return PushResult(target, desc.digest, desc.size, desc.media_type)
