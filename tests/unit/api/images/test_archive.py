"""save (``/images/get``, ``/images/{name}/get``), load and import through the API."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from fastapi.testclient import TestClient

from pydeskd.api.routes.images import SPOOL_IN_MEMORY
from tests.support.images import (
    ImageLayout,
    build_layer,
    busybox_rootfs_entries,
    file,
    tar_bytes,
)
from tests.support.registry import Registry
from tests.unit.api.images.conftest import (
    Containers,
    Daemon,
    Events,
    make_app,
    open_service,
    stream,
)
from tests.unit.api.images.test_records import pull


def test_save_then_load_into_another_daemon(client: TestClient, daemon: Daemon,
                                            registry: Registry, tmp_path: Path) -> None:
    single, zstd = registry.ref("test/single:latest"), registry.ref("test/zstd:latest")
    pull(client, single)
    pull(client, zstd)
    saved = client.get("/images/get", params={"names": [single, zstd]})
    assert saved.status_code == 200 and saved.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(saved.content)) as tar:
        names = set(tar.getnames())
    assert {"index.json", "manifest.json", "oci-layout"} <= names
    one = client.get(f"/images/{single}/get")
    assert one.status_code == 200 and len(one.content) < len(saved.content)
    assert ("save", daemon.images.resolve(single).id) in [
        (p.action, p.actor_id) for p in daemon.events.published]

    other = open_service(tmp_path / "other")
    try:
        other_daemon = Daemon(other, Events(), Containers())
        with TestClient(make_app(other_daemon)) as other_client:
            quiet = other_client.post("/images/load", params={"quiet": "1"},
                                      content=saved.content)
            assert quiet.status_code == 200
            assert sorted(stream(quiet.content), key=str) == sorted(
                [{"stream": f"Loaded image: {single}\n"},
                 {"stream": f"Loaded image: {zstd}\n"}], key=str)
            listed = other_client.get("/images/json").json()
            assert sorted(t for e in listed for t in e["RepoTags"]) == sorted([single, zstd])
            assert other_client.get(f"/images/{single}/json").json()["Id"] == \
                daemon.images.resolve(single).id
            loud = other_client.post("/images/load", content=one.content)
            messages = stream(loud.content)
            assert messages[-1] == {"stream": f"Loaded image: {single}\n"}
            assert all(m["status"] == "Loading layer" for m in messages[:-1])
            assert [p.action for p in other_daemon.events.published].count("load") == 3
    finally:
        other.close()


def test_save_and_load_errors(client: TestClient) -> None:
    missing = client.get("/images/get", params={"names": ["nosuch"]})
    assert missing.status_code == 404 and missing.json()["message"] == "No such image: nosuch"
    assert client.get("/images/nosuch/get").status_code == 404
    assert client.get("/images/get").status_code == 400
    bad = client.post("/images/load", content=b"this is not a tar archive" * 100)
    assert bad.status_code == 400, bad.text


def rootfs_tar() -> bytes:
    return tar_bytes(busybox_rootfs_entries())


def test_import_a_rootfs_tar(client: TestClient, daemon: Daemon) -> None:
    reply = client.post("/images/create",
                        params={"fromSrc": "-", "repo": "imported/app", "tag": "v1",
                                "message": "from a test", "changes": ["ENV A=1", "CMD [\"sh\"]"]},
                        content=rootfs_tar())
    assert reply.status_code == 200, reply.text
    messages = stream(reply.content)
    assert len(messages) == 1 and messages[0]["status"].startswith("sha256:")
    image_id = messages[0]["status"]
    inspect = client.get("/images/imported/app:v1/json").json()
    assert inspect["Id"] == image_id and inspect["Comment"] == "from a test"
    assert "A=1" in inspect["Config"]["Env"] and inspect["Config"]["Cmd"] == ["sh"]
    assert [(p.action, p.actor_id, p.attributes["name"]) for p in daemon.events.published] \
        == [("import", image_id, "imported/app:v1")]
    # repo with its own tag, as the docker CLI sends it; no repo: a dangling image.
    tagged = client.post("/images/create", params={"fromSrc": "-", "repo": "imported/b:v2"},
                         content=rootfs_tar())
    assert tagged.status_code == 200
    assert client.get("/images/imported/b:v2/json").status_code == 200
    bare = client.post("/images/create", params={"fromSrc": "-"}, content=rootfs_tar())
    assert bare.status_code == 200
    url = client.post("/images/create", params={"fromSrc": "http://example.com/x.tar"})
    assert url.status_code == 400
    junk = client.post("/images/create", params={"fromSrc": "-"}, content=b"junk" * 300)
    assert junk.status_code == 400
    assert json.loads(junk.content)["message"]


def test_load_of_a_body_larger_than_the_memory_spool(client: TestClient, daemon: Daemon,
                                                     tmp_path: Path) -> None:
    layout_dir = tmp_path / "big-layout"
    big = os.urandom(SPOOL_IN_MEMORY + (2 << 20))  # random: gzip keeps it this big
    ImageLayout(layout_dir).add_image(
        [build_layer([file("big.bin", big)])], tag="latest",
        annotations={"io.containerd.image.name": "docker.io/library/big:latest"})
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for path in sorted(layout_dir.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout_dir)), recursive=False)
    assert archive.tell() > SPOOL_IN_MEMORY
    reply = client.post("/images/load", params={"quiet": "1"}, content=archive.getvalue())
    assert reply.status_code == 200, reply.text
    assert stream(reply.content)[-1]["stream"].startswith("Loaded image")
    assert len(client.get("/images/json").json()) == 1
    # The spool file lived in the image root and is gone with the request.
    assert list((daemon.images.stores.root / "tmp").iterdir()) == []


def test_save_of_one_platform(client: TestClient, registry: Registry) -> None:
    name = registry.ref("test/multiplatform:latest")
    for platform in ("linux/amd64", "linux/arm64"):
        pull_reply = client.post("/images/create",
                                 params={"fromImage": name, "platform": platform})
        assert pull_reply.status_code == 200
    whole = client.get(f"/images/{name}/get")
    amd64 = client.get(f"/images/{name}/get",
                       params={"platform": '{"os":"linux","architecture":"amd64"}'})
    assert whole.status_code == amd64.status_code == 200

    def manifests(tar_bytes: bytes) -> list[object]:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            member = tar.extractfile("manifest.json")
            assert member is not None
            return list(json.load(member))

    assert len(manifests(whole.content)) == 2 and len(manifests(amd64.content)) == 1
    two = client.get("/images/get", params={"names": [name],
                                            "platform": ["linux/amd64", "linux/arm64"]})
    assert two.status_code == 400
