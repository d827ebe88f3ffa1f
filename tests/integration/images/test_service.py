"""The image service end to end on real stores: credentials per call, rmi + garbage collection
that keeps what is shared and removes the rest, and a prune that never touches a live image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.containerd.errors import FailedPrecondition, NotFound, Unauthorized
from pydeskd.containerd.images import ContainerUse, image_manifests
from pydeskd.containerd.progress import Status
from pydeskd.containerd.registry import Credentials
from pydeskd.containerd.service import ImageService
from pydeskd.containerd.snapshots import Kind
from pydeskd.containerd.snapshots.mount import mounted
from tests.support.image_fixtures import CREDENTIALS
from tests.support.images import ImageLayout, build_layer, busybox_rootfs_entries, file
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ImageService]:
    with ImageService(tmp_path / "store") as svc:
        yield svc


def blobs(svc: ImageService) -> set[str]:
    found: set[str] = set()
    svc.stores.content.walk(lambda info: found.add(info.digest))
    return found


def committed_snapshots(svc: ImageService) -> set[str]:
    found: set[str] = set()
    svc.stores.snapshotter.walk(
        lambda info: found.add(info.name) if info.kind is Kind.COMMITTED else None)
    return found


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_pull_with_credentials_and_a_clear_error_without_them(
        mode: str, request: pytest.FixtureRequest, service: ImageService) -> None:
    registry: Registry = request.getfixturevalue(f"{mode}_registry")
    ref = registry.ref("test/single:latest")
    with pytest.raises(Unauthorized, match="incorrect username or password"):
        service.pull(ref, credentials=Credentials(CREDENTIALS[0], "wrong"))
    with pytest.raises(Unauthorized):
        service.pull(ref)
    result = service.pull(ref, credentials=Credentials(*CREDENTIALS))
    assert service.resolve(ref).id == result.target.digest


def two_images_sharing_a_base(tmp_path: Path, registry: Registry) -> tuple[str, str]:
    layout = ImageLayout(tmp_path / "layout")
    base = build_layer(busybox_rootfs_entries())
    layout.add_image([base, build_layer([file("one.txt", "one\n")])], tag="one")
    layout.add_image([base, build_layer([file("two.txt", "two\n")])], tag="two")
    registry.push_layout(tmp_path / "layout", "gc/one:latest", tag="one")
    registry.push_layout(tmp_path / "layout", "gc/two:latest", tag="two")
    return registry.ref("gc/one:latest"), registry.ref("gc/two:latest")


def test_rmi_collects_what_only_that_image_used_and_keeps_the_shared_base(
        fresh_registry: Registry, service: ImageService, tmp_path: Path) -> None:
    one_ref, two_ref = two_images_sharing_a_base(tmp_path, fresh_registry)
    one, two = service.pull(one_ref), service.pull(two_ref)
    _, one_manifest, _ = image_manifests(service.stores.content, one.target)
    _, two_manifest, _ = image_manifests(service.stores.content, two.target)
    base = one_manifest.layers[0].digest
    assert base == two_manifest.layers[0].digest
    chain_base = one.config.diff_ids[0]

    service.remove(one_ref)

    left = blobs(service)
    assert base in left and two.target.digest in left
    assert one.target.digest not in left and one_manifest.layers[1].digest not in left
    assert one_manifest.config.digest not in left
    snaps = committed_snapshots(service)
    assert chain_base in snaps and two.chain_id in snaps and one.chain_id not in snaps
    # The image that is left still mounts whole.
    key = "check-two"
    with mounted(service.stores.snapshotter.view(key, two.chain_id)) as root:
        assert (root / "two.txt").read_text() == "two\n" and (root / "bin/busybox").exists()
    service.stores.snapshotter.remove(key)


def test_prune_keeps_every_named_image_and_an_active_container_snapshot(
        fresh_registry: Registry, service: ImageService, tmp_path: Path) -> None:
    one_ref, two_ref = two_images_sharing_a_base(tmp_path, fresh_registry)
    one, two = service.pull(one_ref), service.pull(two_ref)
    # A "container" on image one, then image one untagged by force (it becomes unreachable).
    service.stores.snapshotter.prepare("container-rootfs", one.chain_id)
    before = blobs(service)
    deleted, result = service.prune()
    assert deleted == [] and result.content == () and blobs(service) == before
    with pytest.raises(FailedPrecondition, match="container c0ffee"):
        service.remove(one_ref, in_use=lambda _id: ContainerUse("c0ffee" * 10, True))
    stopped = ContainerUse("c0ffee" * 10, False)
    service.remove(one_ref, force=True, in_use=lambda _id: stopped)
    # Forced while a container uses it: untagged, kept as a dangling image with its layers.
    assert [i.dangling for i in service.stores.images.by_digest(one.target.digest)] == [True]
    assert one.chain_id in committed_snapshots(service)
    deleted, _ = service.prune(in_use=lambda digest: digest == one.target.digest)
    assert deleted == [] and one.chain_id in committed_snapshots(service)
    service.stores.snapshotter.remove("container-rootfs")
    deleted, _ = service.prune()
    assert [d.deleted for d in deleted] == [one.target.digest]
    assert one.chain_id not in committed_snapshots(service)
    assert two.chain_id in committed_snapshots(service)
    # prune -a: image two is unused, so it goes too; everything is reclaimed.
    deleted, result = service.prune(unused=True)
    assert any(d.deleted == two.target.digest for d in deleted) and result.bytes_reclaimed > 0
    assert blobs(service) == set() and committed_snapshots(service) == set()
    with pytest.raises(NotFound):
        service.resolve(one_ref)


def test_open_removes_an_abandoned_unpack_and_keeps_a_recent_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydeskd.containerd import service as service_module

    root = tmp_path / "crashed"
    with ImageService(root) as svc:
        svc.stores.snapshotter.prepare("extract-0123456789ab-sha256:x", "")
        svc.stores.snapshotter.prepare("container-keep", "")
    with ImageService(root) as svc:  # recent: maybe another process is unpacking right now
        assert {"extract-0123456789ab-sha256:x", "container-keep"} <= active(svc)
    monkeypatch.setattr(service_module, "EXTRACT_STALE_AFTER", -1.0)
    with ImageService(root) as svc:
        assert active(svc) == {"container-keep"}


def active(svc: ImageService) -> set[str]:
    found: set[str] = set()
    svc.stores.snapshotter.walk(
        lambda info: found.add(info.name) if info.kind is Kind.ACTIVE else None)
    return found


def test_a_slow_pull_does_not_hold_up_garbage_collection(
        fresh_registry: Registry, service: ImageService, tmp_path: Path) -> None:
    import threading

    from tests.support.images import build_big

    build_big(tmp_path / "big", n_layers=2, total_mb=16)
    fresh_registry.push_layout(tmp_path / "big", "slow/big:latest")
    downloading, release = threading.Event(), threading.Event()

    def stall(event: object) -> None:
        if getattr(event, "status", None) is Status.DOWNLOADING and not downloading.is_set():
            downloading.set()
            release.wait(30)

    results: list[object] = []
    puller = threading.Thread(target=lambda: results.append(
        service.pull(fresh_registry.ref("slow/big:latest"), reporter=stall)))
    puller.start()
    try:
        assert downloading.wait(30)
        collector = threading.Thread(target=service.collect_garbage)
        collector.start()
        collector.join(10)
        assert not collector.is_alive(), "GC waited for a pull's download"
    finally:
        release.set()
        puller.join(60)
    assert results, "the pull failed"
    image = service.resolve(fresh_registry.ref("slow/big:latest"))
    _, manifest, _ = image_manifests(service.stores.content, image.target)
    assert {m.digest for m in manifest.layers} <= blobs(service)  # the lease kept them


def test_the_gc_lock_holds_across_services_on_one_root(tmp_path: Path) -> None:
    import threading

    with ImageService(tmp_path / "shared") as first, ImageService(tmp_path / "shared") as second:
        with first.stores.gc.lock.shared():
            collector = threading.Thread(target=second.collect_garbage)
            collector.start()
            collector.join(1.0)
            assert collector.is_alive(), "a GC in another process swept during a commit"
        collector.join(10)
        assert not collector.is_alive()
