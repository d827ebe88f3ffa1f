"""Push to a real registry: skopeo sees the same manifest digest; a pull back into a fresh store
gives the same image ID; blobs the registry has in another repository are mounted, not sent."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.errors import NotFound
from pydeskd.containerd.progress import Collector, Status
from pydeskd.containerd.pull import pull
from pydeskd.containerd.push import push
from pydeskd.containerd.registry import RegistryClient
from pydeskd.containerd.stores import Stores
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    opened = Stores.open(tmp_path / "a")
    yield opened
    opened.close()


@pytest.fixture
def other_stores(tmp_path: Path) -> Iterator[Stores]:
    opened = Stores.open(tmp_path / "b")
    yield opened
    opened.close()


def skopeo_digest(ref: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True).stdout
    out = subprocess.run(["skopeo", "manifest-digest", "/dev/stdin"], input=raw, check=True,
                         capture_output=True).stdout
    return out.decode().strip()


def test_push_then_skopeo_sees_it_and_a_pull_back_gives_the_same_image_id(
        registry: Registry, fresh_registry: Registry, stores: Stores,
        other_stores: Stores) -> None:
    pulled = pull(stores, RegistryClient(), registry.ref("test/multi:latest"))
    dest = fresh_registry.ref("team/app:v1")
    stores.images.tag(pulled.name, dest)
    events = Collector()
    result = push(stores, RegistryClient(), dest, reporter=events)
    assert result.digest == pulled.target.digest
    assert skopeo_digest(dest) == result.digest
    assert any(e.status is Status.PUSHED for e in events.events)
    back = pull(other_stores, RegistryClient(), dest)
    assert other_stores.images.get(back.name).id == stores.images.get(pulled.name).id
    assert back.chain_id == pulled.chain_id


def test_second_repository_on_the_same_registry_mounts_the_layers(
        registry: Registry, fresh_registry: Registry, stores: Stores) -> None:
    pulled = pull(stores, RegistryClient(), registry.ref("test/single:latest"))
    first = fresh_registry.ref("one/app:latest")
    stores.images.tag(pulled.name, first)
    push(stores, RegistryClient(), first)
    # Pulled back from the new registry, the blobs are labelled as present in "one/app" there.
    pull(stores, RegistryClient(), first)
    second = fresh_registry.ref("two/app:latest")
    stores.images.tag(pulled.name, second)
    before = len(fresh_registry.access_log())
    events = Collector()
    push(stores, RegistryClient(), second, reporter=events)
    assert any(e.status is Status.MOUNTED for e in events.events)
    uploads = [a for a in fresh_registry.access_log()[before:]
               if a.method in ("PUT", "PATCH") and "/blobs/uploads/" in a.path]
    assert uploads == []
    assert skopeo_digest(second) == pulled.target.digest


def test_chunked_upload_of_a_large_layer(registry: Registry, fresh_registry: Registry,
                                         stores: Stores) -> None:
    pulled = pull(stores, RegistryClient(), registry.ref("test/single:latest"))
    dest = fresh_registry.ref("chunked/app:latest")
    stores.images.tag(pulled.name, dest)
    client = RegistryClient(chunk_size=64 << 10, monolithic_limit=16 << 10)
    before = len(fresh_registry.access_log())
    push(stores, client, dest)
    patches = [a for a in fresh_registry.access_log()[before:] if a.method == "PATCH"]
    assert len(patches) > 1
    assert skopeo_digest(dest) == pulled.target.digest


def test_index_with_one_platform_pulled_pushes_that_platform(
        registry: Registry, fresh_registry: Registry, stores: Stores) -> None:
    arm = oci.Platform.parse("linux/arm64")
    pulled = pull(stores, RegistryClient(), registry.ref("test/multiplatform:latest"),
                  platform=arm)
    dest = fresh_registry.ref("multi/arch:latest")
    stores.images.tag(pulled.name, dest)
    result = push(stores, RegistryClient(), dest, platform=arm)
    assert result.digest == pulled.manifest.digest == skopeo_digest(dest)
    # Without --platform, the host's platform (amd64) was never pulled: a clear error.
    with pytest.raises(NotFound, match="no platform of this image is available"):
        push(stores, RegistryClient(), dest)


def test_push_of_an_unknown_image_is_not_found(fresh_registry: Registry, stores: Stores) -> None:
    with pytest.raises(NotFound):
        push(stores, RegistryClient(), fresh_registry.ref("nothing/here:latest"))
