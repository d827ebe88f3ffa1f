"""``POST /images/create?fromImage=``: Docker's progress stream from a real registry pull."""

from __future__ import annotations

import base64
import json

from fastapi.testclient import TestClient

from tests.support.image_fixtures import CREDENTIALS
from tests.support.registry import Registry
from tests.unit.api.images.conftest import Daemon, stream

# The statuses a layer goes through in Docker's pull stream, in order (moby's distribution
# puller); each layer's lines must be an ordered subsequence of this.
LAYER_ORDER = ["Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
               "Download complete", "Extracting", "Pull complete"]


def auth_header(user: str, password: str, server: str) -> str:
    """X-Registry-Auth as the docker CLI sends it (bound to the registry's address)."""
    doc = json.dumps({"username": user, "password": password,
                      "serveraddress": server}).encode()
    return base64.urlsafe_b64encode(doc).decode()


def per_layer(messages: list[dict[str, object]]) -> dict[str, list[str]]:
    layers: dict[str, list[str]] = {}
    for m in messages:
        if "progressDetail" in m:
            layers.setdefault(str(m["id"]), []).append(str(m["status"]))
    return layers


def test_pull_streams_dockers_messages_then_is_up_to_date(
        client: TestClient, daemon: Daemon, registry: Registry) -> None:
    name = registry.ref("test/zstd")
    reply = client.post("/images/create", params={"fromImage": name, "tag": "latest"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    messages = stream(reply.content)
    digest = registry.pushed["test/zstd:latest"].digest
    assert messages[0] == {"status": "Pulling from test/zstd", "id": "latest"}
    assert messages[-2:] == [{"status": f"Digest: {digest}"},
                             {"status": f"Status: Downloaded newer image for {name}:latest"}]
    layers = per_layer(messages)
    assert len(layers) == 2
    for statuses in layers.values():
        kept = [s for s in statuses if s not in {"Downloading", "Extracting"}]
        assert kept[0] == "Pulling fs layer" and kept[-1] == "Pull complete"
        assert [s for s in LAYER_ORDER if s in statuses] == \
            sorted(set(statuses), key=LAYER_ORDER.index)
        assert statuses.index("Download complete") < statuses.index("Extracting")
    downloading = [m for m in messages if m["status"] == "Downloading"]
    assert downloading and all(
        set(m["progressDetail"]) == {"current", "total"} and str(m["progress"]).startswith("[")
        for m in downloading)
    assert daemon.images.resolve(f"{name}:latest").id == digest
    assert [(p.action, p.actor_id) for p in daemon.events.published] == [
        ("pull", f"{name}:latest")]

    again = stream(client.post("/images/create",
                               params={"fromImage": f"{name}:latest"}).content)
    assert again == [{"status": "Pulling from test/zstd", "id": "latest"},
                     {"status": f"Digest: {digest}"},
                     {"status": f"Status: Image is up to date for {name}:latest"}]


def test_pull_of_a_second_image_sharing_its_base_says_already_exists(
        client: TestClient, registry: Registry) -> None:
    # The two platforms of test/multiplatform share their base layer.
    name = registry.ref("test/multiplatform")
    first = stream(client.post("/images/create",
                               params={"fromImage": name, "platform": "linux/amd64"}).content)
    assert "Already exists" not in [m["status"] for m in first]
    messages = stream(client.post("/images/create",
                                  params={"fromImage": name, "platform": "linux/arm64"}).content)
    statuses = [m["status"] for m in messages]
    assert statuses.count("Already exists") == 1 and statuses.count("Pull complete") == 1
    shared = next(m["id"] for m in messages if m["status"] == "Already exists")
    assert [m["status"] for m in messages if m.get("id") == shared] == ["Already exists"]


def test_pull_by_digest_in_the_tag_parameter(client: TestClient, daemon: Daemon,
                                            registry: Registry) -> None:
    digest = registry.pushed["test/single:latest"].digest
    name = registry.ref("test/single")
    messages = stream(client.post("/images/create",
                                  params={"fromImage": name, "tag": digest}).content)
    assert messages[0] == {"status": "Pulling from test/single", "id": digest}
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {name}@{digest}"}
    assert daemon.images.resolve(f"{name}@{digest}").id == digest


def test_pull_of_a_platform_the_index_has(client: TestClient, daemon: Daemon,
                                          registry: Registry) -> None:
    name = registry.ref("test/multiplatform:latest")
    reply = client.post("/images/create", params={"fromImage": name,
                                                  "platform": "linux/arm64"})
    assert reply.status_code == 200, reply.text
    inspect = client.get(f"/images/{name}/json").json()
    assert (inspect["Os"], inspect["Architecture"], inspect["Variant"]) == \
        ("linux", "arm64", "v8")


def test_errors_before_the_stream_are_http_errors(client: TestClient,
                                                  registry: Registry) -> None:
    missing = client.post("/images/create",
                          params={"fromImage": registry.ref("test/nosuch"), "tag": "v1"})
    assert missing.status_code == 404
    assert "manifest for" in missing.json()["message"]
    assert "test/nosuch:v1 not found" in missing.json()["message"]
    bad = client.post("/images/create", params={"fromImage": "a/B"})
    assert bad.status_code == 400 and "invalid reference format" in bad.json()["message"]
    neither = client.post("/images/create")
    assert neither.status_code == 400
    platform = client.post("/images/create", params={"fromImage": registry.ref("test/single"),
                                                     "platform": "linux/s390x"})
    assert platform.status_code == 404
    assert "does not match the specified platform" in platform.json()["message"]


def test_error_after_the_stream_started_is_an_error_message(
        client: TestClient, daemon: Daemon, fresh_registry: Registry,
        image_layouts: dict[str, object]) -> None:
    # A registry that serves a corrupt layer blob (same size, other bytes): the download has
    # been reported when verification fails.
    layout = image_layouts["single"]
    pushed = fresh_registry.push_layout(layout.path, "test/broken:latest")  # type: ignore[attr-defined]
    manifest = json.loads(fresh_registry.raw_manifest("test/broken:latest"))
    layer = manifest["layers"][0]["digest"]
    blob = fresh_registry.storage / "docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:]
    data = (blob / "data").read_bytes()
    (blob / "data").write_bytes(bytes(len(data)))
    reply = client.post("/images/create", params={"fromImage": pushed.ref})
    assert reply.status_code == 200
    messages = stream(reply.content)
    assert messages[0]["status"] == "Pulling from test/broken"
    assert set(messages[-1]) == {"errorDetail", "error"}
    assert f"failed to verify {layer}" in messages[-1]["error"]
    assert messages[-1]["errorDetail"] == {"message": messages[-1]["error"]}
    assert daemon.events.published == []


def test_pull_with_x_registry_auth(client: TestClient, htpasswd_registry: Registry) -> None:
    name = htpasswd_registry.ref("test/single:latest")
    denied = client.post("/images/create", params={"fromImage": name})
    # As moby: a 404, or the docker CLI would prompt for a login.
    assert denied.status_code == 404
    assert denied.json()["message"].startswith(
        f"pull access denied for {htpasswd_registry.ref('test/single')}, repository does not"
        " exist or may require 'docker login'")
    wrong_auth = auth_header(CREDENTIALS[0], "nope", htpasswd_registry.host)
    wrong = client.post("/images/create", params={"fromImage": name},
                        headers={"X-Registry-Auth": wrong_auth})
    assert wrong.status_code == 401
    assert wrong.json()["message"] == "unauthorized: incorrect username or password"
    assert "nope" not in wrong.text
    ok = client.post("/images/create", params={"fromImage": name},
                     headers={"X-Registry-Auth": auth_header(*CREDENTIALS, htpasswd_registry.host)})
    assert ok.status_code == 200
    assert stream(ok.content)[-1]["status"].startswith("Status: Downloaded newer image")
    # Credentials for another registry (or Docker Hub, without an address) are not sent here.
    elsewhere = client.post("/images/create", params={"fromImage": name},
                            headers={"X-Registry-Auth": auth_header(*CREDENTIALS, "")})
    assert elsewhere.status_code == 404 and "pull access denied" in elsewhere.json()["message"]
    garbage = client.post("/images/create", params={"fromImage": name},
                          headers={"X-Registry-Auth": base64.urlsafe_b64encode(b"{nope").decode()})
    assert garbage.status_code == 400 and "X-Registry-Auth" in garbage.json()["message"]


def test_distribution_inspect(client: TestClient, registry: Registry,
                              htpasswd_registry: Registry) -> None:
    index = client.get(f"/distribution/{registry.ref('test/multiplatform')}/json")
    assert index.status_code == 200, index.text
    body = index.json()
    assert body["Descriptor"]["digest"] == registry.pushed["test/multiplatform:latest"].digest
    assert sorted((p["os"], p["architecture"], p.get("variant", "")) for p in body["Platforms"]) \
        == [("linux", "amd64", ""), ("linux", "arm64", "v8")]
    single = client.get(f"/distribution/{registry.ref('test/single:latest')}/json").json()
    assert single["Platforms"] == [{"architecture": "amd64", "os": "linux"}]
    assert single["Descriptor"]["size"] > 0
    assert client.get(f"/distribution/{registry.ref('test/nosuch')}/json").status_code == 404
    private = htpasswd_registry.ref("test/single:latest")
    assert client.get(f"/distribution/{private}/json").status_code == 401
    allowed = client.get(f"/distribution/{private}/json", headers={
        "X-Registry-Auth": auth_header(*CREDENTIALS, htpasswd_registry.host)})
    assert allowed.status_code == 200
