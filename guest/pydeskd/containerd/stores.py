"""The stores of one image root, opened together: content, overlay snapshots, images, leases, GC.

What it is for: pull, push, load, import and the daemon all work on the same set of stores and
must follow the same garbage-collection protocol; ``Stores.open(root)`` builds that set once::

    root/content/            blobs (content.FileStore)
    root/snapshots/overlayfs snapshots (snapshots.overlay.OverlaySnapshotter)
    root/images/             image records (images.ImageStore)
    root/leases/             leases (leases.LeaseManager)
    root/gc.lock             the garbage collector's readers-writer lock, across processes

What it must never do: hide a store's own rules (each store keeps its interface), or be opened
twice on one root in one process (sqlite and the GC lock are per process object).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydeskd.containerd.content import FileStore
from pydeskd.containerd.gc import GarbageCollector
from pydeskd.containerd.imageio.docker_archive import CommitContext
from pydeskd.containerd.images import ImageStore
from pydeskd.containerd.leases import LeaseManager
from pydeskd.containerd.progress import Reporter, discard
from pydeskd.containerd.snapshots.overlay import OverlaySnapshotter

SNAPSHOTTER = "overlayfs"
# The label that keeps an image's unpacked layers alive (see gc.py): on the image config blob,
# the chainID of the top committed snapshot.
LABEL_GC_SNAPSHOT = f"containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"
# Where a blob came from, per registry host (a comma list of repositories), as containerd labels
# it: a push to another repository of that registry can mount the blob instead of uploading it.
LABEL_DISTRIBUTION_SOURCE = "containerd.io/distribution.source."


@dataclass(frozen=True)
class Stores:
    root: Path
    content: FileStore
    snapshotter: OverlaySnapshotter
    images: ImageStore
    leases: LeaseManager
    gc: GarbageCollector

    @staticmethod
    def open(root: Path) -> Stores:
        root.mkdir(parents=True, exist_ok=True)
        content = FileStore(root / "content")
        snapshotter = OverlaySnapshotter(root / "snapshots" / SNAPSHOTTER)
        images = ImageStore(root / "images")
        leases = LeaseManager(root / "leases")
        # The GC lock is a file lock too: another process (pydesk-ctr) may share this root.
        gc = GarbageCollector(content, images, leases, {SNAPSHOTTER: snapshotter},
                              lock_path=root / "gc.lock")
        return Stores(root, content, snapshotter, images, leases, gc)

    def commit_context(self, reporter: Reporter = discard) -> CommitContext:
        """What load and import need to commit under the GC protocol."""
        return CommitContext(self.images, self.leases, self.gc.lock, reporter)

    def close(self) -> None:
        self.images.close()
        self.leases.close()
