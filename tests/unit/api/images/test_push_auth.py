"""``POST /images/{name}/push`` (Docker's push stream) and ``POST /auth`` (docker login)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.image_fixtures import CREDENTIALS
from tests.support.registry import Registry
from tests.unit.api.images.conftest import Daemon, stream
from tests.unit.api.images.test_pull import auth_header
from tests.unit.api.images.test_records import pull


def layer_statuses(messages: list[dict[str, object]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in messages:
        if "id" in m:
            out.setdefault(str(m["id"]), []).append(str(m["status"]))
    return out


def test_push_stream_then_layer_exists_then_mount(client: TestClient, daemon: Daemon,
                                                  registry: Registry,
                                                  fresh_registry: Registry) -> None:
    pull(client, registry.ref("test/zstd:latest"))
    repo_a = fresh_registry.ref("test/a")
    assert client.post(f"/images/{registry.ref('test/zstd:latest')}/tag",
                       params={"repo": repo_a, "tag": "v1"}).status_code == 201
    reply = client.post(f"/images/{repo_a}/push", params={"tag": "v1"})
    assert reply.status_code == 200, reply.text
    messages = stream(reply.content)
    digest = fresh_registry.manifest_digest("test/a:v1")
    assert messages[0] == {"status": f"The push refers to repository [{repo_a}]"}
    layers = layer_statuses(messages)
    assert len(layers) == 2  # the layers only; the config is not listed
    for statuses in layers.values():
        assert statuses[0] == "Preparing" and statuses[-1] == "Pushed"
        assert "Pushing" in statuses
    size = len(fresh_registry.raw_manifest("test/a:v1"))
    assert messages[-2:] == [
        {"status": f"v1: digest: {digest} size: {size}"},
        {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": digest, "Size": size}}]
    assert ("push", f"{repo_a}:v1") in [(p.action, p.actor_id) for p in daemon.events.published]

    again = stream(client.post(f"/images/{repo_a}/push", params={"tag": "v1"}).content)
    assert all(s[-1] == "Layer already exists" for s in layer_statuses(again).values())

    # A blob pulled from test/a is mounted into test/b of the same registry, not uploaded.
    pull(client, f"{repo_a}:v1")
    repo_b = fresh_registry.ref("test/b")
    client.post(f"/images/{repo_a}:v1/tag", params={"repo": repo_b, "tag": "v1"})
    mounted = stream(client.post(f"/images/{repo_b}/push", params={"tag": "v1"}).content)
    assert all(s[-1] == "Mounted from test/a" for s in layer_statuses(mounted).values())


def test_push_without_a_tag_pushes_every_tag(client: TestClient, registry: Registry,
                                             fresh_registry: Registry) -> None:
    pull(client, registry.ref("test/single:latest"))
    repo = fresh_registry.ref("test/all")
    for tag in ("one", "two"):
        client.post(f"/images/{registry.ref('test/single:latest')}/tag",
                    params={"repo": repo, "tag": tag})
    messages = stream(client.post(f"/images/{repo}/push").content)
    assert [m["aux"]["Tag"] for m in messages if "aux" in m] == ["one", "two"]
    assert fresh_registry.manifest_digest("test/all:two")


def test_push_errors(client: TestClient, registry: Registry,
                     htpasswd_registry: Registry) -> None:
    missing = client.post(f"/images/{htpasswd_registry.ref('test/none')}/push",
                          params={"tag": "v1"})
    # As dockerd (recorded): the stream has started when the image is found missing.
    assert missing.status_code == 200
    assert stream(missing.content)[-1]["error"] == (
        f"An image does not exist locally with the tag: {htpasswd_registry.ref('test/none')}")
    pull(client, registry.ref("test/single:latest"))
    target = htpasswd_registry.ref("test/pushed")
    client.post(f"/images/{registry.ref('test/single:latest')}/tag",
                params={"repo": target, "tag": "v1"})
    denied = client.post(f"/images/{target}/push", params={"tag": "v1"})
    # The registry refuses the first upload: the stream has started ("The push refers to"),
    # as Docker's does, so the refusal is its last message.
    assert denied.status_code == 200
    messages = stream(denied.content)
    assert messages[0]["status"] == f"The push refers to repository [{target}]"
    assert messages[-1]["error"] == "denied: requested access to the resource is denied"
    ok = client.post(f"/images/{target}/push", params={"tag": "v1"},
                     headers={"X-Registry-Auth": auth_header(*CREDENTIALS,
                                                             htpasswd_registry.host)})
    assert "aux" in stream(ok.content)[-1]
    assert htpasswd_registry.manifest_digest("test/pushed:v1", creds=CREDENTIALS)


def login(client: TestClient, server: str, user: str, password: str) -> tuple[int, dict[str, str]]:
    reply = client.post("/auth", json={"username": user, "password": password,
                                       "serveraddress": server})
    return reply.status_code, reply.json()


def test_login_basic(client: TestClient, htpasswd_registry: Registry) -> None:
    host = htpasswd_registry.host
    assert login(client, host, *CREDENTIALS) == (
        200, {"Status": "Login Succeeded", "IdentityToken": ""})
    status, body = login(client, host, CREDENTIALS[0], "wrong")
    assert status == 401
    assert body["message"] == (f"login attempt to http://{host}/v2/ failed with status: "
                               "401 Unauthorized")
    assert login(client, f"http://{host}", *CREDENTIALS)[0] == 200
    assert login(client, host, "", "")[0] == 401


def test_login_token(client: TestClient, token_registry: Registry) -> None:
    host = token_registry.host
    assert login(client, host, *CREDENTIALS)[0] == 200
    status, body = login(client, host, CREDENTIALS[0], "wrong")
    assert (status, body["message"]) == (401, "unauthorized: incorrect username or password")


def test_login_to_an_open_registry_and_bad_bodies(client: TestClient,
                                                  fresh_registry: Registry) -> None:
    assert login(client, fresh_registry.host, "anyone", "anything")[0] == 200
    assert client.post("/auth", content=b"{").status_code == 400
    assert client.post("/auth", json=["x"]).status_code == 400
    assert client.post("/auth", json={"username": 3}).status_code == 400
