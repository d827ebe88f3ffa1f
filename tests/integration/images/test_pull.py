"""Pull from a real registry: the unpacked root filesystem equals what skopeo + umoci make of the
same image; platforms, progress, dedup, resume and failure modes."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.errors import FailedPrecondition, NotFound, Unavailable
from pydeskd.containerd.images import image_manifests
from pydeskd.containerd.progress import Collector, Status
from pydeskd.containerd.pull import PullResult, pull
from pydeskd.containerd.registry import RegistryClient
from pydeskd.containerd.snapshots.mount import mounted
from pydeskd.containerd.stores import LABEL_GC_SNAPSHOT, Stores
from tests.support.images import ImageLayout, build_big
from tests.support.registry import Registry
from tests.support.rootfs_compare import diff_trees, reference_rootfs, tree_snapshot

pytestmark = pytest.mark.integration

AMD64 = oci.Platform.parse("linux/amd64")
ARM64 = oci.Platform.parse("linux/arm64")


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    opened = Stores.open(tmp_path / "store")
    yield opened
    opened.close()


def unpacked_tree(stores: Stores, result: PullResult) -> dict[str, object]:
    key = f"view-{result.chain_id}"
    mounts = stores.snapshotter.view(key, result.chain_id)
    try:
        with mounted(mounts) as root:
            return dict(tree_snapshot(root))
    finally:
        stores.snapshotter.remove(key)


@pytest.mark.parametrize(("name", "platform"), [
    ("single", None), ("multi", None), ("zstd", None), ("docker_v2", None),
    ("multiplatform", ("linux", "amd64", "")), ("multiplatform", ("linux", "arm64", "v8")),
    ("docker_list", ("linux", "arm64", "v8")),
])
def test_pull_unpacks_what_skopeo_and_umoci_unpack(
        registry: Registry, stores: Stores, tmp_path: Path, name: str,
        platform: tuple[str, str, str] | None) -> None:
    ref = registry.ref(f"test/{name}:latest")
    wanted = oci.Platform(*platform) if platform else AMD64
    result = pull(stores, RegistryClient(), ref, platform=wanted)
    assert result.target.digest == registry.pushed[f"test/{name}:latest"].digest
    mine = unpacked_tree(stores, result)
    theirs = tree_snapshot(reference_rootfs(ref, tmp_path / "ref", platform=platform))
    assert diff_trees(mine, theirs, names=("pydesk", "umoci")) == []  # type: ignore[arg-type]
    image = stores.images.get(result.name)
    assert image.id == result.target.digest
    _, _, config = image_manifests(stores.content, image.target, oci.PlatformMatcher(wanted))
    assert config.platform == wanted.normalized()
    assert stores.content.info(result.manifest.digest).size == result.manifest.size
    assert stores.content.info(_config_digest(stores, result)).labels[LABEL_GC_SNAPSHOT] \
        == result.chain_id


def _config_digest(stores: Stores, result: PullResult) -> str:
    _, manifest, _ = image_manifests(stores.content, result.target,
                                     oci.PlatformMatcher(result.config.platform))
    return manifest.config.digest


def test_pull_of_an_index_fetches_only_the_chosen_platform(registry: Registry,
                                                            stores: Stores) -> None:
    result = pull(stores, RegistryClient(), registry.ref("test/multiplatform:latest"),
                  platform=ARM64)
    index = oci.Index.parse(stores.content.reader_at(result.target.digest)
                            .read_at(0, result.target.size))
    present = {m.digest for m in index.manifests if _in_store(stores, m.digest)}
    assert present == {result.manifest.digest}
    with pytest.raises(NotFound, match="no matching manifest for linux/s390x"):
        pull(stores, RegistryClient(), registry.ref("test/multiplatform:latest"),
             platform=oci.Platform.parse("linux/s390x"))


def _in_store(stores: Stores, digest: str) -> bool:
    try:
        stores.content.info(digest)
        return True
    except NotFound:
        return False


def test_second_pull_downloads_nothing_and_reports_already_exists(
        registry: Registry, stores: Stores) -> None:
    ref = registry.ref("test/multi:latest")
    first = Collector()
    result = pull(stores, RegistryClient(), ref, reporter=first)
    assert result.downloaded
    layers = oci.Manifest.parse(stores.content.reader_at(result.manifest.digest)
                                .read_at(0, result.manifest.size)).layers
    for layer in layers:
        statuses = first.statuses(layer.digest)
        assert Status.DOWNLOAD_COMPLETE in statuses and statuses[-1] is Status.PULL_COMPLETE
    before = len(registry.access_log())
    again = Collector()
    second = pull(stores, RegistryClient(), ref, reporter=again)
    assert not second.downloaded and second.target == result.target
    blob_gets = [a for a in registry.access_log()[before:]
                 if "/blobs/" in a.path and a.method == "GET"]
    assert blob_gets == []
    for layer in layers:
        assert Status.ALREADY_EXISTS in again.statuses(layer.digest)


def test_concurrent_pulls_of_one_image_download_each_layer_once(
        registry: Registry, stores: Stores) -> None:
    ref = registry.ref("test/multi:latest")
    before = len(registry.access_log())
    results: list[PullResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(pull(stores, RegistryClient(), ref))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len({r.target.digest for r in results}) == 1
    gets = [a.path for a in registry.access_log()[before:]
            if "/blobs/" in a.path and a.method == "GET" and a.status in (200, 206)]
    assert len(gets) == len(set(gets)), gets


def test_unknown_tag_and_unreachable_registry_are_clear(registry: Registry, stores: Stores,
                                                        fresh_registry: Registry) -> None:
    with pytest.raises(NotFound, match=r"manifest for .*test/single:nope not found"):
        pull(stores, RegistryClient(), registry.ref("test/single:nope"))
    fresh_registry.stop()
    with pytest.raises(Unavailable, match=re.escape(fresh_registry.host)):
        pull(stores, RegistryClient(), fresh_registry.ref("test/single:latest"))
    assert stores.images.all() == []


def test_corrupted_blob_is_rejected_and_nothing_recorded(fresh_registry: Registry,
                                                         stores: Stores, tmp_path: Path,
                                                         image_layouts: dict) -> None:
    pushed = fresh_registry.push_layout(image_layouts["single"].path, "test/bad:latest")
    layout = ImageLayout(image_layouts["single"].path, create=False)
    manifest = oci.Manifest.parse(layout.read_blob(pushed.digest))
    layer = manifest.layers[0]
    # Corrupt the registry's stored copy of the layer (same size, other bytes).
    blob = next(fresh_registry.storage.rglob(f"blobs/sha256/{layer.digest[7:9]}/"
                                          f"{layer.digest[7:]}/data"))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(FailedPrecondition, match="failed to verify"):
        pull(stores, RegistryClient(), fresh_registry.ref("test/bad:latest"))
    assert not _in_store(stores, layer.digest)
    assert stores.images.all() == []


def test_registry_stopped_mid_pull_then_the_next_pull_resumes(
        fresh_registry: Registry, stores: Stores, tmp_path: Path) -> None:
    layout_dir = tmp_path / "big"
    build_big(layout_dir, n_layers=2, total_mb=64)
    fresh_registry.push_layout(layout_dir, "test/big:latest")
    ref = fresh_registry.ref("test/big:latest")
    stopped = threading.Event()

    def stop_when_downloading(event: object) -> None:
        if getattr(event, "status", None) is not Status.DOWNLOADING or stopped.is_set():
            return
        if getattr(event, "current", 0) == 0:
            # Progress comes at most every 100 ms, and a quiet machine reads 64 MB in less:
            # holding the download here once makes the next chunk's event come at once.
            time.sleep(0.15)
            return
        # The reporter runs inline: the download waits while the registry is killed.
        stopped.set()
        fresh_registry.stop(kill=True)

    with pytest.raises(Unavailable):
        pull(stores, RegistryClient(), ref, reporter=stop_when_downloading)
    assert stopped.is_set()
    partial = {s.ref: s.offset for s in stores.content.list_statuses()}
    assert partial and max(partial.values()) > 0
    assert stores.images.all() == []
    fresh_registry.start()
    before = len(fresh_registry.access_log())
    result = pull(stores, RegistryClient(), ref)
    assert stores.images.get(result.name).id == result.target.digest
    ranged = [a for a in fresh_registry.access_log()[before:]
              if "/blobs/" in a.path and a.status == 206]
    assert ranged, "the second pull should resume with Range requests"
