"""save/load and import through the image service: round trips in pydesk, and the real Docker
Engine (Debian's docker.io) as the other side of `docker save` / `docker load`."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.images import image_manifests
from pydeskd.containerd.service import ImageService
from pydeskd.containerd.snapshots.mount import mounted
from tests.support.docker_engine import DockerEngine
from tests.support.registry import Registry
from tests.support.rootfs_compare import diff_trees, tree_snapshot

pytestmark = pytest.mark.integration

HOST = oci.Platform.host()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ImageService]:
    svc = ImageService(tmp_path / "a")
    yield svc
    svc.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ImageService]:
    svc = ImageService(tmp_path / "b")
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[DockerEngine]:
    with DockerEngine() as engine:
        yield engine


def rootfs_of(svc: ImageService, name: str) -> dict[str, object]:
    image = svc.resolve(name)
    chain = svc.unpack(image.target)
    key = f"view-{chain}"
    try:
        with mounted(svc.stores.snapshotter.view(key, chain)) as root:
            return dict(tree_snapshot(root))
    finally:
        svc.stores.snapshotter.remove(key)


def test_save_then_load_into_a_fresh_store_round_trips(
        registry: Registry, service: ImageService, fresh: ImageService) -> None:
    pulled = service.pull(registry.ref("test/multi:latest"))
    out = io.BytesIO()
    service.save(out, [pulled.name])
    loaded = fresh.load(io.BytesIO(out.getvalue()))
    assert [(i.name, i.id) for i in loaded] == [(pulled.name, pulled.target.digest)]
    assert diff_trees(rootfs_of(service, pulled.name),  # type: ignore[arg-type]
                      rootfs_of(fresh, pulled.name)) == []  # type: ignore[arg-type]
    again = io.BytesIO()
    fresh.save(again, [pulled.name])
    assert again.getvalue() == out.getvalue()


def test_saved_tar_loads_into_the_docker_engine_and_runs_there(
        registry: Registry, service: ImageService, docker_engine: DockerEngine) -> None:
    pulled = service.pull(registry.ref("test/multi:latest"))
    out = io.BytesIO()
    service.save(out, [pulled.name])
    result = docker_engine.docker("load", input=out.getvalue())
    familiar = pulled.reference.familiar
    assert f"Loaded image: {familiar}" in result.stdout.decode()
    run = docker_engine.docker("run", "--rm", "--network", "none", familiar,
                               "sh", "-c", "echo hello from $(cat /etc/hostname >/dev/null; "
                               "echo busybox) && ls /")
    assert b"hello from busybox" in run.stdout
    inspect = docker_engine.docker("image", "inspect", "-f", "{{.Id}}", familiar)
    _, manifest, _ = image_manifests(service.stores.content, pulled.target,
                                     oci.PlatformMatcher(HOST))
    # Docker 20.10's image ID is the config digest.
    assert inspect.stdout.decode().strip() == manifest.config.digest
    docker_engine.docker("rmi", familiar)


def test_docker_engine_save_loads_into_pydesk(
        registry: Registry, service: ImageService, docker_engine: DockerEngine,
        tmp_path: Path) -> None:
    pulled = service.pull(registry.ref("test/single:latest"))
    out = io.BytesIO()
    service.save(out, [pulled.name])
    familiar = pulled.reference.familiar
    docker_engine.docker("load", input=out.getvalue())
    docker_engine.docker("tag", familiar, "docker-saved/single:v1")
    saved = docker_engine.docker("save", "docker-saved/single:v1").stdout
    docker_engine.docker("rmi", familiar, "docker-saved/single:v1")
    with ImageService(tmp_path / "c") as other:
        loaded = other.load(io.BytesIO(saved))
        assert [i.name for i in loaded] == ["docker.io/docker-saved/single:v1"]
        assert diff_trees(rootfs_of(service, pulled.name),  # type: ignore[arg-type]
                          rootfs_of(other, "docker-saved/single:v1")) == []  # type: ignore[arg-type]


def test_import_of_a_rootfs_tar(registry: Registry, service: ImageService,
                                tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    subprocess.run(["cp", "/bin/busybox", str(rootfs / "bin/busybox")], check=True)
    (rootfs / "bin/sh").symlink_to("busybox")
    (rootfs / "hello.txt").write_text("imported\n")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    loaded = service.import_rootfs(io.BytesIO(data.getvalue()), name="imported/app:v1",
                                   changes=["CMD [\"/bin/sh\"]", "ENV A=b"])
    image = service.resolve("imported/app:v1")
    assert image.id == loaded.id
    _, _, config = image_manifests(service.stores.content, image.target)
    assert config.config.get("Cmd") == ["/bin/sh"] and "A=b" in config.config.get("Env", [])
    tree = rootfs_of(service, "imported/app:v1")
    assert "hello.txt" in tree and "bin/busybox" in tree
