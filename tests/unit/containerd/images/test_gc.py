"""Leases and garbage collection, with the real content store and a fake snapshotter.

The fake stands in for the overlay snapshotter (written separately; it needs root to mount):
it implements only the walk/remove protocol GC uses, and refuses to remove a snapshot that
still has children, as a real one must.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore
from pydeskd.containerd.errors import AlreadyExists, FailedPrecondition, NotFound
from pydeskd.containerd.gc import LABEL_SNAPSHOT_OVERLAYFS, GarbageCollector, RWLock
from pydeskd.containerd.images import ImageStore
from pydeskd.containerd.leases import KIND_CONTENT, KIND_INGESTS, LeaseManager, snapshot_kind

pytestmark = pytest.mark.unit


class Kind(enum.Enum):
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3


@dataclass(frozen=True)
class SnapInfo:
    name: str
    parent: str | None
    kind: Kind
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


class FakeSnapshotter:
    def __init__(self) -> None:
        self.snaps: dict[str, SnapInfo] = {}

    def add(self, name: str, parent: str | None = None, kind: Kind = Kind.COMMITTED,
            labels: Mapping[str, str] | None = None) -> None:
        self.snaps[name] = SnapInfo(name, parent, kind, dict(labels or {}), time.time() - 1)

    def walk(self, fn: Callable[[SnapInfo], None], filters: Sequence[str] = ()) -> None:
        for info in list(self.snaps.values()):
            fn(info)

    def remove(self, key: str) -> None:
        if key not in self.snaps:
            raise NotFound(key)
        if any(s.parent == key for s in self.snaps.values()):
            raise FailedPrecondition(f"snapshot {key} has children")
        del self.snaps[key]


def put_blob(content: FileStore, data: bytes, labels: Mapping[str, str] | None = None) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with contextlib.suppress(AlreadyExists), content.writer(f"test-{digest}") as w:
        w.write(data)
        w.commit(len(data), digest, labels)
    return digest


def blob_desc(content: FileStore, data: bytes, media_type: str,
              labels: Mapping[str, str] | None = None) -> oci.Descriptor:
    return oci.Descriptor(media_type, put_blob(content, data, labels), len(data))


def make_image(content: FileStore, layers: Sequence[bytes], tag: str,
               config_labels: Mapping[str, str] | None = None) -> oci.Descriptor:
    layer_descs = [blob_desc(content, data, oci.OCI_LAYER) for data in layers]
    config = oci.canonical_json({"architecture": "amd64", "os": "linux", "tag": tag,
                                 "rootfs": {"type": "layers",
                                            "diff_ids": [d.digest for d in layer_descs]}})
    cfg = blob_desc(content, config, oci.OCI_CONFIG, config_labels)
    manifest = oci.Manifest(oci.OCI_MANIFEST, cfg, tuple(layer_descs))
    return blob_desc(content, oci.canonical_json(manifest.to_json()), oci.OCI_MANIFEST)


@dataclass
class World:
    content: FileStore
    images: ImageStore
    leases: LeaseManager
    snaps: FakeSnapshotter
    gc: GarbageCollector

    def digests(self) -> set[str]:
        out: set[str] = set()
        self.content.walk(lambda i: out.add(i.digest))
        return out


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    content = FileStore(tmp_path / "content")
    images = ImageStore(tmp_path / "meta")
    leases = LeaseManager(tmp_path / "meta")
    snaps = FakeSnapshotter()
    yield World(content, images, leases, snaps,
                GarbageCollector(content, images, leases, {"overlayfs": snaps}))
    images.close()
    leases.close()


def test_leases_persist_and_expire(tmp_path: Path) -> None:
    leases = LeaseManager(tmp_path)
    lease = leases.create("pull-1")
    leases.add_resource("pull-1", KIND_CONTENT, "sha256:" + "a" * 64)
    leases.add_resource("pull-1", KIND_CONTENT, "sha256:" + "a" * 64)  # idempotent
    old = leases.create("old", expires_at=time.time() - 1)
    leases.add_resource("old", snapshot_kind(), "s1")
    leases.close()
    leases = LeaseManager(tmp_path)
    assert [x.id for x in leases.list()] == ["old", "pull-1"]
    assert leases.get("pull-1") == lease and old.expired()
    assert {r.key for r in leases.live_resources()} == {"sha256:" + "a" * 64}
    assert leases.delete_expired() == ["old"]
    leases.delete("pull-1")
    assert leases.list() == [] and leases.live_resources() == set()
    with pytest.raises(NotFound):
        leases.add_resource("pull-1", KIND_CONTENT, "x")
    with leases.hold() as held:
        assert leases.get(held.id)
    with pytest.raises(NotFound):
        leases.get(held.id)
    leases.close()


def test_shared_layers_kept_unreferenced_removed(world: World) -> None:
    shared = b"shared layer"
    one = make_image(world.content, [shared, b"one"], "one")
    two = make_image(world.content, [shared, b"two"], "two")
    world.images.put("one", one)
    world.images.put("two", two)
    before = world.digests()
    stray = put_blob(world.content, b"stray")
    assert world.gc.collect().content == (stray,)
    assert world.digests() == before

    world.images.remove("one")
    result = world.gc.collect()
    # one's manifest, config and own layer go; the shared layer stays for two.
    assert len(result.content) == 3
    assert result.bytes_reclaimed > 0
    remaining = world.digests()
    assert "sha256:" + hashlib.sha256(shared).hexdigest() in remaining
    assert "sha256:" + hashlib.sha256(b"one").hexdigest() not in remaining
    assert world.gc.collect().content == ()


def test_dry_run_deletes_nothing(world: World) -> None:
    stray = put_blob(world.content, b"stray")
    assert world.gc.collect(dry_run=True).content == (stray,)
    assert stray in world.digests()


def test_index_children_and_missing_platforms(world: World) -> None:
    amd = make_image(world.content, [b"amd"], "amd")
    absent = oci.Descriptor(oci.OCI_MANIFEST, "sha256:" + "f" * 64, 10,
                            platform=oci.Platform("linux", "arm64"))
    index = oci.Index(oci.OCI_INDEX, (oci.Descriptor(amd.media_type, amd.digest, amd.size,
                                                     platform=oci.Platform("linux", "amd64")),
                                      absent))
    target = blob_desc(world.content, oci.canonical_json(index.to_json()), oci.OCI_INDEX)
    world.images.put("multi", target)
    assert world.gc.collect().content == ()
    assert len(world.digests()) == 4


def test_leases_protect_half_pulled(world: World) -> None:
    with world.leases.hold() as lease:
        # A pull has written the layer and the manifest but no image record exists yet.
        manifest = make_image(world.content, [b"layer"], "pulling")
        world.leases.add_resource(lease.id, KIND_CONTENT, manifest.digest)
        assert world.gc.collect().content == ()
        world.images.put("pulled", manifest)
    assert world.gc.collect().content == ()
    world.images.remove("pulled")
    assert len(world.gc.collect().content) == 3


def test_expired_lease_protects_nothing(world: World) -> None:
    lease = world.leases.create(expires_at=time.time() - 1)
    digest = put_blob(world.content, b"crashed pull")
    world.leases.add_resource(lease.id, KIND_CONTENT, digest)
    assert world.gc.collect().content == (digest,)
    assert world.leases.list() == []


def test_gc_labels_follow_content(world: World) -> None:
    child = put_blob(world.content, b"child")
    parent = put_blob(world.content, b"parent", {"containerd.io/gc.ref.content.m.0": child})
    lease = world.leases.create()
    world.leases.add_resource(lease.id, KIND_CONTENT, parent)
    assert world.gc.collect().content == ()


def test_snapshot_chains(world: World) -> None:
    s = world.snaps
    for name, parent in (("l1", None), ("l2", "l1"), ("l3", "l2"), ("x1", None), ("x2", "x1")):
        s.add(name, parent)
    # The config's label keeps the unpacked chain l1 <- l2 <- l3.
    manifest = make_image(world.content, [b"layer"], "unpacked",
                          config_labels={LABEL_SNAPSHOT_OVERLAYFS: "l3"})
    world.images.put("unpacked", manifest)
    # A container on x2 keeps x1 and x2.
    s.add("container", "x2", Kind.ACTIVE)
    s.add("orphan1", None)
    s.add("orphan2", "orphan1")
    result = world.gc.collect()
    # Children before parents: the fake refuses otherwise.
    assert result.snapshots == (("overlayfs", "orphan2"), ("overlayfs", "orphan1"))
    assert set(s.snaps) == {"l1", "l2", "l3", "x1", "x2", "container"}
    del s.snaps["container"]
    assert [k for _, k in world.gc.collect().snapshots] == ["x2", "x1"]
    world.images.remove("unpacked")
    result = world.gc.collect()
    assert [k for _, k in result.snapshots] == ["l3", "l2", "l1"]
    assert not s.snaps and not result.errors


def test_lease_keeps_snapshot(world: World) -> None:
    world.snaps.add("base")
    world.snaps.add("top", "base")
    lease = world.leases.create()
    world.leases.add_resource(lease.id, snapshot_kind("overlayfs"), "top")
    assert world.gc.collect().snapshots == ()
    world.leases.delete(lease.id)
    assert len(world.gc.collect().snapshots) == 2


def test_sweep_goes_on_after_an_error(world: World) -> None:
    world.snaps.add("stuck")
    world.snaps.add("free")

    def remove(key: str, original: Callable[[str], None] = world.snaps.remove) -> None:
        if key == "stuck":
            raise FailedPrecondition("busy")
        original(key)

    world.snaps.remove = remove  # type: ignore[method-assign]
    result = world.gc.collect()
    assert result.snapshots == (("overlayfs", "free"),)
    assert result.errors and "stuck" in result.errors[0]


def test_rwlock_excludes_gc_from_writers() -> None:
    lock = RWLock()
    order: list[str] = []
    entered = threading.Event()

    def gc() -> None:
        entered.set()
        with lock.exclusive():
            order.append("gc")

    with lock.shared():
        t = threading.Thread(target=gc)
        t.start()
        entered.wait()
        time.sleep(0.05)
        order.append("writer done")
    t.join(5)
    assert order == ["writer done", "gc"]


def test_stale_ingests_aborted_unless_leased(world: World) -> None:
    for ref in ("stale", "leased", "fresh"):
        with world.content.writer(ref) as w:
            w.write(b"partial")
    old = time.time() - 2 * 24 * 3600
    for ref in ("stale", "leased"):
        data = next(p for p in (world.content.root / "ingests").glob("*/ref")
                    if p.read_text() == ref).parent / "data"
        os.utime(data, (old, old))
    lease = world.leases.create()
    world.leases.add_resource(lease.id, KIND_INGESTS, "leased")
    assert world.gc.collect(dry_run=True).ingests == ("stale",)
    assert [s.ref for s in world.content.list_statuses()] == ["fresh", "leased", "stale"]
    assert world.gc.collect().ingests == ("stale",)
    assert [s.ref for s in world.content.list_statuses()] == ["fresh", "leased"]
