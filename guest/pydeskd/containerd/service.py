"""The image service: what the daemon calls for every image operation, over one image root.

What it is for: ``docker pull/push/save/load/import/tag/rmi/images/image prune`` each map to one
method here, so the daemon's API handlers stay thin and every path follows the same rules:

- registry access shares one connection pool (``Transport``); each call may bring its own
  credentials (the API's ``X-Registry-Auth``), otherwise ``~/.docker/config.json`` is used;
- whatever brings an image in (pull, load, import) leaves it **unpacked** for the host's
  platform, so ``docker run`` right after a ``docker load`` needs no more work;
- everything that commits runs under the GC protocol (``gc.lock`` shared + a lease).

What it must never do: bypass the stores' own interfaces, or return an error that carries a
credential (registry errors are built without them).
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from pydeskd.containerd import oci
from pydeskd.containerd.errors import NotFound
from pydeskd.containerd.gc import GCResult
from pydeskd.containerd.imageio import docker_archive, oci_layout
from pydeskd.containerd.imageio.docker_archive import LoadedImage
from pydeskd.containerd.imageio.rootfs_import import import_rootfs
from pydeskd.containerd.images import (
    DeleteItem,
    Image,
    InUse,
    available_manifests,
    image_manifests,
)
from pydeskd.containerd.leases import KIND_CONTENT
from pydeskd.containerd.progress import Reporter, discard
from pydeskd.containerd.pull import PullResult, pull, unpack_into_snapshots
from pydeskd.containerd.push import PushResult, push
from pydeskd.containerd.reference import Reference
from pydeskd.containerd.registry import (
    Credentials,
    CredentialSource,
    DockerConfig,
    Explicit,
    RegistryClient,
    RegistryHosts,
    Transport,
)
from pydeskd.containerd.snapshots import Info as SnapshotInfo
from pydeskd.containerd.snapshots import Kind
from pydeskd.containerd.stores import Stores

# The key prefix unpack_layers gives its working snapshots, and when one counts as abandoned.
EXTRACT_PREFIX = "extract-"
EXTRACT_STALE_AFTER = 3600.0


class ImageService:
    def __init__(self, root: Path, hosts: RegistryHosts | None = None,
                 credentials: CredentialSource | None = None,
                 platform: oci.Platform | None = None) -> None:
        self.stores = Stores.open(root)
        self.hosts = hosts or RegistryHosts()
        self.credentials = credentials if credentials is not None else DockerConfig()
        self.platform = platform or oci.Platform.host()
        self._transport = Transport()
        self._recover()

    def _recover(self) -> None:
        """Sort out what a crash left: directories the snapshotter's database does not know,
        and unpack snapshots (``extract-*``, ACTIVE) no unpack has touched for an hour -- an
        ACTIVE snapshot is a GC root, so without this a crashed unpack would be kept forever.
        The age rule leaves alone an unpack another process (``pydesk-ctr``) is running now."""
        stale_before = time.time() - EXTRACT_STALE_AFTER
        stale: list[str] = []

        def pick(info: SnapshotInfo) -> None:
            if info.kind is Kind.ACTIVE and info.name.startswith(EXTRACT_PREFIX) \
                    and info.updated_at < stale_before:
                stale.append(info.name)

        self.stores.snapshotter.walk(pick)
        for key in stale:
            with contextlib.suppress(NotFound):
                self.stores.snapshotter.remove(key)
        self.stores.snapshotter.cleanup()

    def close(self) -> None:
        self.stores.close()

    def __enter__(self) -> ImageService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def client(self, credentials: Credentials | None = None) -> RegistryClient:
        """A registry client; explicit credentials (``X-Registry-Auth``) win over config.json."""
        source: CredentialSource = self.credentials
        if credentials is not None and not credentials.empty:
            source = Explicit(credentials)
        return RegistryClient(self.hosts, source, transport=self._transport)

    # --- registry --------------------------------------------------------------------------

    def pull(self, ref: Reference | str, *, platform: oci.Platform | None = None,
             credentials: Credentials | None = None,
             reporter: Reporter = discard) -> PullResult:
        return pull(self.stores, self.client(credentials), ref,
                    platform=platform or self.platform, reporter=reporter)

    def push(self, ref: Reference | str, *, platform: oci.Platform | None = None,
             credentials: Credentials | None = None,
             reporter: Reporter = discard) -> PushResult:
        return push(self.stores, self.client(credentials), ref, platform=platform,
                    reporter=reporter)

    # --- files -----------------------------------------------------------------------------

    def load(self, stream: IO[bytes], reporter: Reporter = discard) -> list[LoadedImage]:
        """``docker load``: any ``docker save`` tar or OCI layout tar; unpacked on arrival."""
        loaded = docker_archive.load(stream, self.stores.content,
                                     self.stores.commit_context(reporter))
        for image in loaded:
            self._unpack_if_runnable(self.stores.images.resolve(image.id).target, reporter)
        return loaded

    def save(self, out: IO[bytes], names: Sequence[str],
             platform: oci.Platform | None = None) -> None:
        """``docker save``: the named images (names or IDs) as one tar."""
        docker_archive.save(out, self.stores.content, self._records(names), platform)

    def export_layout(self, root: Path, names: Sequence[str],
                      platform: oci.Platform | None = None) -> None:
        oci_layout.export_dir(root, self.stores.content, self._records(names), platform)

    def import_layout(self, root: Path, reporter: Reporter = discard) -> list[LoadedImage]:
        loaded = oci_layout.import_dir(root, self.stores.content,
                                       self.stores.commit_context(reporter))
        for image in loaded:
            self._unpack_if_runnable(self.stores.images.resolve(image.id).target, reporter)
        return loaded

    def import_rootfs(self, stream: IO[bytes], *, name: str | None = None,
                      changes: Sequence[str] = (), message: str = "",
                      reporter: Reporter = discard) -> LoadedImage:
        """``docker import``: a root filesystem tar becomes a one-layer image."""
        loaded = import_rootfs(stream, self.stores.content, self.stores.commit_context(reporter),
                               name=name, changes=changes, message=message,
                               platform=self.platform)
        self._unpack_if_runnable(self.stores.images.resolve(loaded.id).target, reporter)
        return loaded

    def _records(self, names: Sequence[str]) -> list[Image]:
        return [self.stores.images.resolve(name) for name in names]

    # --- snapshots -------------------------------------------------------------------------

    def unpack(self, target: oci.Descriptor, platform: oci.Platform | None = None,
               reporter: Reporter = discard) -> str:
        """Unpack ``target`` for ``platform`` (the host's); return its top chainID."""
        matcher = oci.PlatformMatcher(platform or self.platform)
        stores = self.stores
        with stores.gc.lock.shared(), stores.leases.hold() as lease:
            _, manifest, config = self._platform_image(target, matcher)
            for desc in (manifest.config, *manifest.layers):
                stores.leases.add_resource(lease.id, KIND_CONTENT, desc.digest)
            return unpack_into_snapshots(stores, lease, manifest, config, reporter)

    def _platform_image(self, target: oci.Descriptor, matcher: oci.PlatformMatcher,
                        ) -> tuple[oci.Descriptor, oci.Manifest, oci.ImageConfig]:
        """The manifest and config of ``target`` for ``matcher``, or a NotFound that names the
        platforms the store does hold (a pull of one platform leaves the others out)."""
        try:
            return image_manifests(self.stores.content, target, matcher)
        except NotFound:
            present = []
            for desc in available_manifests(self.stores.content, target):
                with contextlib.suppress(NotFound):
                    present.append(str(image_manifests(self.stores.content, desc)[2].platform))
            raise NotFound(f"no matching manifest for {matcher.wanted} in the local image store"
                           f" (available: {', '.join(present) or 'none'})") from None

    def _unpack_if_runnable(self, target: oci.Descriptor, reporter: Reporter) -> None:
        # An image of another platform (an arm64 image loaded on amd64) is stored, not unpacked.
        with contextlib.suppress(NotFound):
            self.unpack(target, reporter=reporter)

    # --- records ---------------------------------------------------------------------------

    def resolve(self, text: str) -> Image:
        return self.stores.images.resolve(text)

    def tag(self, source: str, new_ref: str) -> Image:
        return self.stores.images.tag(source, new_ref)

    def list(self, filters: Mapping[str, Sequence[str]] | None = None) -> builtins.list[Image]:
        return self.stores.images.list(filters)

    def remove(self, text: str, *, force: bool = False,
               in_use: InUse | None = None) -> builtins.list[DeleteItem]:
        """``docker rmi``; the blobs and snapshots nothing needs any more go too (as Docker's
        containerd store does: its GC runs after a delete)."""
        items = self.stores.images.remove(text, force=force, in_use=in_use)
        self.stores.gc.collect()
        return items

    def prune(self, *, unused: bool = False,
              in_use: InUse | None = None) -> tuple[builtins.list[DeleteItem], GCResult]:
        """``docker image prune [-a]``: delete dangling images (``unused``: every image no
        container uses), then collect every blob and committed snapshot nothing needs."""
        deleted: builtins.list[DeleteItem] = []
        seen: set[str] = set()
        for image in self.stores.images.all():
            if image.id in seen or not (image.dangling or unused):
                continue
            seen.add(image.id)
            if in_use is not None and in_use(image.id):
                continue
            with contextlib.suppress(NotFound):
                deleted += self.stores.images.remove(image.id, force=True)
        return deleted, self.stores.gc.collect()

    def collect_garbage(self, dry_run: bool = False) -> GCResult:
        """Collect every blob and committed snapshot no image, lease or container needs."""
        return self.stores.gc.collect(dry_run=dry_run)
