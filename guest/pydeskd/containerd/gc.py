"""Garbage collection of content blobs and committed snapshots: mark from roots, sweep the rest.

What it is for: ``docker image prune``, ``rmi`` and ``system df`` reclaim the space of blobs and
unpacked layers that no image, container or in-flight pull needs. The model is containerd's
``core/metadata/gc.go``:

Roots
  - every image record's target (dangling records too: Docker shows them, prune removes them);
  - every resource of a live (unexpired) lease: ``content`` digests, ``snapshots/<name>`` keys;
  - every ACTIVE or VIEW snapshot (a container's rootfs or a mounted view);
  - the expected digest of every ingest in progress.

References followed
  - an index -> its manifests; a manifest -> its config and layers (parsed with ``oci``; a
    platform the pull skipped is simply absent and not an error);
  - a blob's labels ``containerd.io/gc.ref.content.<anything>`` = digest and
    ``containerd.io/gc.ref.snapshot.<snapshotter>`` = snapshot key; the same labels on a snapshot;
  - a snapshot -> its parent (so a chain is kept whole).

**The unpacker must label each image config** ``containerd.io/gc.ref.snapshot.overlayfs`` =
the key of the top committed snapshot of its chain (the chain ID), as containerd's unpacker
does: that label is what keeps an image's unpacked layers alive. Without it, an unpacked
image's snapshots are collected (and the next run unpacks them again).

Sweep deletes unmarked blobs (``Manager.delete``) and unmarked COMMITTED snapshots, children
before parents. ACTIVE/VIEW snapshots are never swept (they are roots). Ingests abandoned for
a day (``STALE_INGEST_AFTER``) and in no live lease (kind ``ingests``) are aborted.

Locking protocol: ``GarbageCollector.lock`` is a readers-writer lock. ``collect`` holds it
exclusively from mark to the end of sweep. Every writer that commits blobs or snapshots holds
it *shared* from before its first commit until the object is reachable from a root -- in
practice: ``with gc.lock.shared(), leases.hold() as lease:`` around "commit + add to lease",
and keep the lease until the image record exists. Mark also reads leases before images, so a
pull that creates its record and then drops its lease between the two reads is still seen.
As a second guard, sweep spares anything created after mark began.

What it must never do: delete anything a root reaches, delete an ACTIVE/VIEW snapshot, or stop
half-way on one object's error (it records the failure and goes on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydeskd.containerd import oci
from pydeskd.containerd.content import Info as ContentInfo
from pydeskd.containerd.errors import ContainerdError
from pydeskd.containerd.image_content import MAX_MANIFEST_SIZE, read_blob
from pydeskd.containerd.images import ImageStore
from pydeskd.containerd.leases import (
    KIND_CONTENT,
    KIND_INGESTS,
    KIND_SNAPSHOTS_PREFIX,
    LeaseManager,
)

# An ingest untouched this long, and in no live lease, was abandoned (containerd: 1 day).
STALE_INGEST_AFTER = 24 * 3600.0
LABEL_REF_CONTENT = "containerd.io/gc.ref.content."
LABEL_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."
# The label the unpacker sets on a config blob (see the module docstring).
LABEL_SNAPSHOT_OVERLAYFS = LABEL_REF_SNAPSHOT + "overlayfs"


class ContentStore(Protocol):
    """What GC uses of the content store (``content.FileStore`` has all of it)."""

    def reader_at(self, digest: str) -> Any: ...

    def walk(self, fn: Callable[[ContentInfo], None], filters: Sequence[str] = ()) -> None: ...

    def delete(self, digest: str) -> None: ...

    def list_statuses(self, ref_prefix: str = "") -> Sequence[Any]: ...

    def abort(self, ref: str) -> None: ...


class SnapshotInfo(Protocol):
    """The fields GC reads of a snapshot's ``Info``; ``kind`` is an enum with ``ACTIVE``,
    ``VIEW`` and ``COMMITTED`` members."""

    @property
    def name(self) -> str: ...

    @property
    def parent(self) -> str | None: ...

    @property
    def kind(self) -> Any: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def created_at(self) -> float: ...


class Snapshotter(Protocol):
    def walk(self, fn: Callable[[SnapshotInfo], None], filters: Sequence[str] = ()) -> None: ...

    def remove(self, key: str) -> None: ...


def _kind_name(kind: Any) -> str:
    return str(getattr(kind, "name", kind)).upper()


@dataclass(frozen=True)
class GCResult:
    """What one collection removed: blob digests, ``(snapshotter, key)`` pairs, bytes freed."""

    content: tuple[str, ...] = ()
    snapshots: tuple[tuple[str, str], ...] = ()
    bytes_reclaimed: int = 0
    errors: tuple[str, ...] = ()
    ingests: tuple[str, ...] = ()


class RWLock:
    """Many shared holders or one exclusive holder; a waiting exclusive holder blocks new shared
    ones, so a stream of pulls cannot starve GC.

    With ``path``, the lock also holds across processes (``flock`` on that file, one open file
    description per holder): ``pydesk-ctr`` and the daemon may work on one image root, and a GC
    in one must not sweep what the other is committing. Within a process the condition variable
    decides first (and keeps the writer priority); the ``flock`` is taken after it.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._path = path

    @contextlib.contextmanager
    def _flocked(self, operation: int) -> Iterator[None]:
        if self._path is None:
            yield
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)  # releases the flock

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            with self._flocked(fcntl.LOCK_SH):
                yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            with self._flocked(fcntl.LOCK_EX):
                yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class GarbageCollector:
    """Collects ``content`` and the snapshotters' committed snapshots (by snapshotter name)."""

    def __init__(self, content: ContentStore, images: ImageStore, leases: LeaseManager,
                 snapshotters: Mapping[str, Snapshotter] | None = None, *,
                 stale_ingest_after: float | None = STALE_INGEST_AFTER,
                 lock_path: Path | None = None) -> None:
        self.content = content
        self.stale_ingest_after = stale_ingest_after
        self.images = images
        self.leases = leases
        self.snapshotters = dict(snapshotters or {})
        self.lock = RWLock(lock_path)

    def collect(self, dry_run: bool = False) -> GCResult:
        """Mark and sweep once (``dry_run``: report what would go, delete nothing)."""
        with self.lock.exclusive():
            started = time.time()
            blobs, snaps, marked_blobs, marked_snaps = self._mark(started, dry_run)
            result = self._sweep(started, blobs=blobs, snaps=snaps, marked_blobs=marked_blobs,
                                 marked_snaps=marked_snaps, dry_run=dry_run)
            ingests = self._sweep_ingests(started, dry_run)
            return dataclasses.replace(result, ingests=tuple(ingests))

    def _sweep_ingests(self, now: float, dry_run: bool) -> list[str]:
        """Abort ingests nobody has written to for ``stale_ingest_after`` seconds and no live
        lease holds (a pull or load that died with the daemon); a leased ingest stays
        resumable."""
        if self.stale_ingest_after is None:
            return []
        leased = {r.key for r in self.leases.live_resources(now) if r.kind == KIND_INGESTS}
        out = []
        for status in self.content.list_statuses():
            if status.ref in leased or now - status.updated_at < self.stale_ingest_after:
                continue
            if not dry_run:
                try:
                    self.content.abort(status.ref)
                except ContainerdError:
                    continue  # a writer holds it right now: not stale after all
            out.append(status.ref)
        return out

    # --- mark --------------------------------------------------------------------------------

    def _mark(self, now: float, dry_run: bool) -> tuple[dict[str, ContentInfo],
                                         dict[tuple[str, str], SnapshotInfo],
                                         set[str], set[tuple[str, str]]]:
        # Leases before images: see the locking protocol in the module docstring.
        if not dry_run:
            self.leases.delete_expired(now)
        lease_resources = self.leases.live_resources(now)
        records = self.images.all()

        blobs: dict[str, ContentInfo] = {}
        self.content.walk(lambda info: blobs.__setitem__(info.digest, info))
        snaps: dict[tuple[str, str], SnapshotInfo] = {}
        for sn_name, sn in self.snapshotters.items():
            sn.walk(_collect_into(snaps, sn_name))

        content_queue: list[tuple[str, str | None]] = []
        snap_queue: list[tuple[str, str]] = []
        for record in records:
            content_queue.append((record.target.digest, record.target.media_type))
        for res in lease_resources:
            if res.kind == KIND_CONTENT:
                content_queue.append((res.key, None))
            elif res.kind.startswith(KIND_SNAPSHOTS_PREFIX):
                snap_queue.append((res.kind[len(KIND_SNAPSHOTS_PREFIX):], res.key))
        for status in self.content.list_statuses():
            if getattr(status, "expected", None):
                content_queue.append((status.expected, None))
        for key, info in snaps.items():
            if _kind_name(info.kind) in ("ACTIVE", "VIEW"):
                snap_queue.append(key)

        marked_blobs: set[str] = set()
        marked_snaps: set[tuple[str, str]] = set()
        while content_queue or snap_queue:
            while content_queue:
                digest, media_type = content_queue.pop()
                if digest in marked_blobs or digest not in blobs:
                    continue
                marked_blobs.add(digest)
                blob = blobs[digest]
                content_queue.extend((d, None) for d in _label_content_refs(blob.labels))
                snap_queue.extend(_label_snapshot_refs(blob.labels))
                content_queue.extend(self._children(blob, media_type))
            while snap_queue:
                key = snap_queue.pop()
                if key in marked_snaps or key not in snaps:
                    continue
                marked_snaps.add(key)
                info = snaps[key]
                if info.parent:
                    snap_queue.append((key[0], info.parent))
                content_queue.extend((d, None) for d in _label_content_refs(info.labels))
                snap_queue.extend(_label_snapshot_refs(info.labels))
        return blobs, snaps, marked_blobs, marked_snaps

    def _children(self, blob: ContentInfo, media_type: str | None) -> list[tuple[str, str]]:
        """The descriptors an index or a manifest points at; nothing for other blobs."""
        if media_type is not None and media_type not in oci.MANIFEST_TYPES | oci.INDEX_TYPES:
            return []
        if blob.size > MAX_MANIFEST_SIZE:
            return []
        try:
            data = read_blob(self.content, oci.Descriptor(media_type or "", blob.digest,
                                                          blob.size))
            if media_type is None:
                if not data.lstrip().startswith(b"{"):
                    return []
                media_type = oci.sniff_media_type(data)
            if media_type in oci.INDEX_TYPES:
                index = oci.Index.parse(data, media_type)
                return [(m.digest, m.media_type) for m in index.manifests]
            if media_type in oci.MANIFEST_TYPES:
                manifest = oci.Manifest.parse(data, media_type)
                out = [(manifest.config.digest, manifest.config.media_type)]
                out += [(layer.digest, layer.media_type) for layer in manifest.layers]
                if manifest.subject is not None:
                    out.append((manifest.subject.digest, manifest.subject.media_type))
                return out
        except ContainerdError:
            pass  # not a document we understand: a leaf
        return []

    # --- sweep -------------------------------------------------------------------------------

    def _sweep(self, started: float, *, blobs: Mapping[str, ContentInfo],
               snaps: Mapping[tuple[str, str], SnapshotInfo], marked_blobs: set[str],
               marked_snaps: set[tuple[str, str]], dry_run: bool) -> GCResult:
        deleted_snaps: list[tuple[str, str]] = []
        errors: list[str] = []
        doomed = [k for k, info in snaps.items() if k not in marked_snaps
                  and _kind_name(info.kind) == "COMMITTED" and info.created_at < started]
        # Children before parents: deepest first.
        doomed.sort(key=lambda k: -_depth(snaps, k))
        for sn_name, key in doomed:
            if not dry_run:
                try:
                    self.snapshotters[sn_name].remove(key)
                except (ContainerdError, OSError) as e:
                    errors.append(f"snapshot {sn_name}/{key}: {e}")
                    continue
            deleted_snaps.append((sn_name, key))
        deleted_blobs: list[str] = []
        reclaimed = 0
        for digest, info in sorted(blobs.items()):
            if digest in marked_blobs or info.created_at >= started:
                continue
            if not dry_run:
                try:
                    self.content.delete(digest)
                except (ContainerdError, OSError) as e:
                    errors.append(f"content {digest}: {e}")
                    continue
            deleted_blobs.append(digest)
            reclaimed += info.size
        return GCResult(tuple(deleted_blobs), tuple(deleted_snaps), reclaimed, tuple(errors))


def _collect_into(snaps: dict[tuple[str, str], SnapshotInfo],
                  sn_name: str) -> Callable[[SnapshotInfo], None]:
    def add(info: SnapshotInfo) -> None:
        snaps[(sn_name, info.name)] = info
    return add


def _depth(snaps: Mapping[tuple[str, str], SnapshotInfo], key: tuple[str, str]) -> int:
    depth, seen = 0, set()
    while key in snaps and key not in seen:
        seen.add(key)
        parent = snaps[key].parent
        if not parent:
            break
        key = (key[0], parent)
        depth += 1
    return depth


def _label_content_refs(labels: Mapping[str, str]) -> list[str]:
    return [v for k, v in labels.items() if k.startswith(LABEL_REF_CONTENT) and v]


def _label_snapshot_refs(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    # containerd allows a suffix after the snapshotter's name (``...snapshot.overlayfs/1``) so
    # that one object can keep several snapshots.
    return [(k[len(LABEL_REF_SNAPSHOT):].split("/", 1)[0], v) for k, v in labels.items()
            if k.startswith(LABEL_REF_SNAPSHOT) and v and len(k) > len(LABEL_REF_SNAPSHOT)]
