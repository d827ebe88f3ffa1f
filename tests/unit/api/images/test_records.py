"""List, inspect, history, tag, rmi and prune through the API, in Docker's shapes."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from pydeskd.containerd.images import ContainerUse
from tests.support.registry import Registry
from tests.unit.api.images.conftest import Daemon, stream


def pull(client: TestClient, name: str) -> None:
    reply = client.post("/images/create", params={"fromImage": name})
    assert reply.status_code == 200, reply.text
    assert "errorDetail" not in stream(reply.content)[-1]


def test_list_and_inspect_shapes(client: TestClient, daemon: Daemon, registry: Registry) -> None:
    single = registry.ref("test/single:latest")
    pull(client, single)
    digest = registry.pushed["test/single:latest"].digest
    listed = client.get("/images/json").json()
    assert len(listed) == 1
    entry = listed[0]
    assert set(entry) >= {"Id", "ParentId", "RepoTags", "RepoDigests", "Created", "Size",
                          "SharedSize", "Labels", "Containers"}
    assert entry["Id"] == digest and entry["ParentId"] == ""
    assert entry["RepoTags"] == [single]
    assert entry["RepoDigests"] == [f"{registry.ref('test/single')}@{digest}"]
    assert isinstance(entry["Created"], int) and entry["Created"] > 0
    assert entry["SharedSize"] == -1 and entry["Containers"] == -1
    manifest = json.loads(registry.raw_manifest("test/single:latest"))
    assert entry["Size"] == sum(layer["size"] for layer in manifest["layers"])

    inspect = client.get(f"/images/{single}/json").json()
    assert inspect["Id"] == digest and inspect["RepoTags"] == [single]
    assert inspect["Os"] == "linux" and inspect["Architecture"] == "amd64"
    assert inspect["Size"] == entry["Size"]
    assert inspect["RootFS"]["Type"] == "layers" and len(inspect["RootFS"]["Layers"]) == 1
    assert inspect["GraphDriver"]["Name"] == "overlayfs"
    assert inspect["Created"].endswith("Z") and isinstance(inspect["Config"], dict)
    assert inspect["Metadata"]["LastTagTime"].endswith("Z")
    # The same image by ID, short ID, and versioned path.
    assert client.get(f"/images/{digest}/json").json()["Id"] == digest
    assert client.get(f"/images/{digest[7:19]}/json").json()["Id"] == digest
    assert client.get(f"/v1.47/images/{single}/json").json()["Id"] == digest
    # Older API versions get the fields dockerd gave them.
    assert "VirtualSize" not in entry and "Container" not in inspect
    assert "Hostname" not in inspect["Config"]
    old = client.get(f"/v1.41/images/{single}/json").json()
    assert old["VirtualSize"] == old["Size"] and old["Container"] == ""
    assert old["Config"]["Hostname"] == "" and old["Config"]["AttachStdin"] is False
    assert old["Config"]["Cmd"] == inspect["Config"].get("Cmd")
    assert old["ContainerConfig"]["Image"] == ""
    assert client.get("/v1.43/images/json").json()[0]["VirtualSize"] == entry["Size"]
    middle = client.get(f"/v1.45/images/{single}/json").json()
    assert "VirtualSize" not in middle and "Container" not in middle
    assert "Hostname" in middle["Config"]
    missing = client.get("/images/nosuch:1/json")
    assert missing.status_code == 404 and missing.json()["message"] == "No such image: nosuch:1"


def test_list_filters(client: TestClient, registry: Registry) -> None:
    single, zstd = registry.ref("test/single:latest"), registry.ref("test/zstd:latest")
    pull(client, single)
    pull(client, zstd)
    assert client.post(f"/images/{single}/tag", params={"repo": "mine/app", "tag": "v1"}) \
        .status_code == 201

    def tags(filters: dict[str, object]) -> list[list[str]]:
        reply = client.get("/images/json", params={"filters": json.dumps(filters)})
        assert reply.status_code == 200, reply.text
        return sorted(sorted(e["RepoTags"]) for e in reply.json())

    assert tags({}) == [sorted([single, "mine/app:v1"]), [zstd]]
    assert tags({"reference": {"mine/*": True}}) == [["mine/app:v1"]]
    assert tags({"reference": ["mine/app:v1"]}) == [["mine/app:v1"]]  # the old list form
    assert tags({"dangling": {"true": True}}) == []
    # before/since compare the records' creation times, as Docker 29's containerd store does:
    # the tag made last is "since" both pulls.
    assert tags({"before": {zstd: True}}) == [[single]]
    assert tags({"since": {single: True}}) == sorted([["mine/app:v1"], [zstd]])
    assert tags({"label": {"nosuch.label": True}}) == []
    bad = client.get("/images/json", params={"filters": json.dumps({"colour": ["red"]})})
    assert bad.status_code == 400 and "invalid filter 'colour'" in bad.json()["message"]
    assert client.get("/images/json", params={"filters": "{"}).status_code == 400


def test_history_newest_first_with_id_and_tags_on_top(client: TestClient,
                                                      registry: Registry) -> None:
    name = registry.ref("test/zstd:latest")
    pull(client, name)
    history = client.get(f"/images/{name}/history").json()
    assert len(history) >= 2
    assert history[0]["Id"].startswith("sha256:") and history[0]["Tags"] == [name]
    assert all(h["Id"] == "<missing>" and h["Tags"] is None for h in history[1:])
    assert all(set(h) == {"Id", "Created", "CreatedBy", "Tags", "Size", "Comment"}
               for h in history)
    assert sum(1 for h in history if h["Size"] > 0) == 2


def test_tag_and_rmi_with_events(client: TestClient, daemon: Daemon,
                                 registry: Registry) -> None:
    single = registry.ref("test/single:latest")
    pull(client, single)
    image_id = registry.pushed["test/single:latest"].digest
    reply = client.post(f"/images/{single}/tag", params={"repo": "busybox", "tag": "mine"})
    assert reply.status_code == 201 and reply.content == b""
    assert client.post(f"/images/{single}/tag", params={"repo": "other:v2"}).status_code == 201
    assert client.get("/images/busybox:mine/json").json()["Id"] == image_id
    assert client.get("/images/other:v2/json").json()["Id"] == image_id
    assert client.post("/images/nosuch/tag", params={"repo": "x"}).status_code == 404
    assert client.post(f"/images/{single}/tag", params={"repo": "Bad"}).status_code == 400
    assert client.post(f"/images/{single}/tag").status_code == 400

    conflict = client.delete(f"/images/{image_id}")
    assert conflict.status_code == 409
    assert "referenced in multiple repositories" in conflict.json()["message"]
    assert client.delete("/images/busybox:mine").json() == [{"Untagged": "busybox:mine"}]
    assert client.delete("/images/other:v2").json() == [{"Untagged": "other:v2"}]

    daemon.containers.using[image_id] = ContainerUse("c" * 64, running=True)
    used = client.delete(f"/images/{single}")
    assert used.status_code == 409 and "cccccccccccc" in used.json()["message"]
    daemon.containers.using.clear()
    removed = client.delete(f"/images/{single}").json()
    assert removed == [{"Untagged": single}, {"Deleted": image_id}]
    assert client.get("/images/json").json() == []
    assert client.delete(f"/images/{single}").status_code == 404
    # As moby: tag/untag/delete name the image ID as actor, the name as attribute.
    events = [(p.action, p.actor_id, p.attributes.get("name"))
              for p in daemon.events.published if p.action != "pull"]
    assert events == [("tag", image_id, "busybox:mine"), ("tag", image_id, "other:v2"),
                      ("untag", image_id, "busybox:mine"), ("untag", image_id, "other:v2"),
                      ("untag", image_id, single), ("delete", image_id, image_id)]


def test_prune_dangling_then_unused(client: TestClient, daemon: Daemon,
                                    registry: Registry) -> None:
    single, zstd = registry.ref("test/single:latest"), registry.ref("test/zstd:latest")
    pull(client, single)
    pull(client, zstd)
    # Moving single's tag onto zstd leaves single's image dangling.
    assert client.post(f"/images/{zstd}/tag", params={"repo": single}).status_code == 201
    dangling = client.get("/images/json",
                          params={"filters": '{"dangling":{"true":true}}'}).json()
    assert [e["RepoTags"] for e in dangling] == [[]]
    pruned = client.post("/images/prune").json()
    assert pruned["ImagesDeleted"] == [{"Deleted": registry.pushed["test/single:latest"].digest}]
    assert pruned["SpaceReclaimed"] > 0
    assert client.post("/images/prune").json() == {"ImagesDeleted": None, "SpaceReclaimed": 0}

    zstd_id = registry.pushed["test/zstd:latest"].digest
    daemon.containers.using[zstd_id] = ContainerUse("d" * 64, running=False)
    all_unused = '{"dangling":{"false":true}}'
    assert client.post("/images/prune", params={"filters": all_unused}).json()[
        "ImagesDeleted"] is None
    daemon.containers.using.clear()
    deleted = client.post("/images/prune", params={"filters": all_unused}).json()
    assert {"Deleted": zstd_id} in deleted["ImagesDeleted"]
    assert client.get("/images/json").json() == []
    bad = client.post("/images/prune", params={"filters": '{"colour":{"red":true}}'})
    assert bad.status_code == 400 and "invalid filter 'colour'" in bad.json()["message"]
    bad_time = client.post("/images/prune", params={"filters": '{"until":{"soon":true}}'})
    assert bad_time.status_code == 400


def test_prune_with_until_and_label(client: TestClient, registry: Registry) -> None:
    single, zstd = registry.ref("test/single:latest"), registry.ref("test/zstd:latest")
    pull(client, single)
    pull(client, zstd)
    all_unused = {"dangling": {"false": True}}

    def prune(**filters: dict[str, bool]) -> list[dict[str, str]] | None:
        reply = client.post("/images/prune",
                            params={"filters": json.dumps({**all_unused, **filters})})
        assert reply.status_code == 200, reply.text
        deleted: list[dict[str, str]] | None = reply.json()["ImagesDeleted"]
        return deleted

    assert prune(until={"1h": True}) is None  # both were pulled just now
    assert prune(label={"nosuch": True}) is None
    assert prune(until={"2000-01-01T00:00:00Z": True}) is None
    # label! spares what carries the label: neither test image has one, so both go.
    gone = prune(**{"label!": {"nosuch": True}, "until": {"-1h": True}})
    assert gone is not None and sum(1 for item in gone if "Deleted" in item) == 2
    assert client.get("/images/json").json() == []


def test_search_is_not_implemented_with_a_message(client: TestClient) -> None:
    reply = client.get("/images/search", params={"term": "busybox"})
    assert reply.status_code == 501 and "search" in reply.json()["message"]
