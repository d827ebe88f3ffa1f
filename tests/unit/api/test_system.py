"""Version negotiation, _ping, version, info and events through the FastAPI app."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from pydeskd.api.versions import (
    CURRENT_API_VERSION,
    MIN_API_VERSION,
    ApiVersion,
    check_version,
    split_version,
)
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.daemon import Daemon


@pytest.mark.parametrize(("path", "version", "rest"), [
    ("/v1.45/containers/json", ApiVersion(1, 45), "/containers/json"),
    ("/v1.50/_ping", ApiVersion(1, 50), "/_ping"),
    ("/v1.41", ApiVersion(1, 41), "/"),
    ("/containers/json", None, "/containers/json"),
    ("/version", None, "/version"),
    ("/volumes/v1.2", None, "/volumes/v1.2"),
])
def test_split_version(path: str, version: ApiVersion | None, rest: str) -> None:
    assert split_version(path).version == version
    assert split_version(path).path == rest


def test_malformed_version_prefix_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        split_version("/v1/containers/json")


@pytest.mark.parametrize(("asked", "served", "error"), [
    (None, CURRENT_API_VERSION, None),
    (ApiVersion(1, 41), ApiVersion(1, 41), None),
    (ApiVersion(1, 45), ApiVersion(1, 45), None),
    (ApiVersion(1, 50), ApiVersion(1, 50), None),
    (ApiVersion(1, 51), None, "client version 1.51 is too new. Maximum supported API "
                               "version is 1.50"),
    (ApiVersion(2, 0), None, "too new"),
    (ApiVersion(1, 40), None, "client version 1.40 is too old. Minimum supported API "
                               "version is 1.41, please upgrade your client to a newer version"),
    (ApiVersion(1, 24), None, "too old"),
])
def test_version_negotiation(asked: ApiVersion | None, served: ApiVersion | None,
                             error: str | None) -> None:
    if error is None:
        assert check_version(asked) == served
    else:
        with pytest.raises(InvalidArgument, match=error):
            check_version(asked)


def test_version_errors_over_http(client: TestClient) -> None:
    too_new = client.get("/v1.99/version")
    assert too_new.status_code == 400
    assert too_new.json() == {"message": "client version 1.99 is too new. Maximum supported "
                                         "API version is 1.50"}
    too_old = client.get("/v1.12/info")
    assert too_old.status_code == 400 and "too old" in too_old.json()["message"]
    assert client.get("/v1.41/version").status_code == 200


def test_ping_get_and_head_carry_dockers_headers(client: TestClient) -> None:
    for path in ("/_ping", "/v1.44/_ping"):
        got = client.get(path)
        assert got.status_code == 200 and got.text == "OK"
        assert got.headers["api-version"] == str(CURRENT_API_VERSION)
        assert got.headers["ostype"] == "linux"
        assert got.headers["docker-experimental"] == "false"
        assert got.headers["builder-version"] == "1"
        assert got.headers["swarm"] == "inactive"
        assert got.headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert got.headers["pragma"] == "no-cache"
    head = client.head("/_ping")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["api-version"] == str(CURRENT_API_VERSION)


def test_version_reports_the_api_range(client: TestClient) -> None:
    body = client.get("/version").json()
    assert body["ApiVersion"] == str(CURRENT_API_VERSION)
    assert body["MinAPIVersion"] == str(MIN_API_VERSION)
    assert body["Os"] == "linux"
    assert body["Components"][0]["Name"] == "Engine"


def test_info_reports_configuration_and_host(client: TestClient, daemon: Daemon) -> None:
    body = client.get("/info").json()
    assert body["Driver"] == "overlayfs"
    assert body["DockerRootDir"] == str(daemon.config.data_root)
    assert body["Containers"] == 0 and body["Images"] == 0
    assert body["DefaultRuntime"] == "runc" and "runc" in body["Runtimes"]
    assert body["RegistryConfig"]["Mirrors"] == ["http://127.0.0.1:5999"]
    assert "10.1.0.0/16" in body["RegistryConfig"]["InsecureRegistryCIDRs"]
    assert body["RegistryConfig"]["IndexConfigs"]["reg.local:5000"]["Secure"] is False
    assert body["NCPU"] >= 1 and body["MemTotal"] > 0
    assert body["OSType"] == "linux"
    assert body["ID"] == client.get("/info").json()["ID"]  # stable


def test_unknown_route_is_404_with_a_message(client: TestClient) -> None:
    got = client.get("/v1.45/nonsense")
    assert got.status_code == 404 and got.json() == {"message": "page not found"}


def _events(client: TestClient, **params: str) -> list[dict[str, object]]:
    got = client.get("/events", params=params)
    assert got.status_code == 200, got.text
    return [json.loads(line) for line in got.text.splitlines()]


def test_events_since_until_replays_the_buffer(client: TestClient, daemon: Daemon) -> None:
    start = time.time_ns()
    daemon.events.publish("container", "create", "c1", {"name": "web", "image": "busybox"})
    daemon.events.publish("image", "pull", "busybox:latest", {"name": "busybox:latest"})
    daemon.events.publish("container", "start", "c1", {"name": "web", "image": "busybox"})
    end = time.time_ns()
    since, until = f"{start // 10**9}.{start % 10**9:09d}", f"{end // 10**9}.{end % 10**9:09d}"
    events = _events(client, since=since, until=until)
    assert [e["Action"] for e in events] == ["create", "pull", "start"]
    first = events[0]
    assert first["Type"] == "container" and first["status"] == "create"
    assert first["id"] == "c1" and first["from"] == "busybox"
    assert first["Actor"] == {"ID": "c1", "Attributes": {"name": "web", "image": "busybox"}}
    assert first["scope"] == "local" and isinstance(first["timeNano"], int)
    filtered = _events(client, since=since, until=until,
                       filters=json.dumps({"type": ["container"], "event": ["start"]}))
    assert [e["Action"] for e in filtered] == ["start"]
    old_form = _events(client, since=since, until=until,
                       filters=json.dumps({"container": {"web": True}}))
    assert [e["Action"] for e in old_form] == ["create", "start"]


def test_events_stream_live_until_until(client: TestClient, daemon: Daemon) -> None:
    until = time.time_ns() + 700_000_000
    timer = threading.Timer(0.2, daemon.events.publish, ("volume", "create", "v1", {}))
    timer.start()
    try:
        events = _events(client, until=f"{until // 10**9}.{until % 10**9:09d}")
    finally:
        timer.cancel()
    assert [(e["Type"], e["Action"]) for e in events] == [("volume", "create")]
    assert "status" not in events[0]  # the legacy fields are for containers and images
    assert time.time_ns() >= until
    assert daemon.events.subscriber_count == 0


def test_events_bad_filters_and_timestamps_are_400(client: TestClient) -> None:
    for params in ({"filters": "{nope"}, {"filters": json.dumps({"colour": ["red"]})},
                   {"since": "yesterday"}):
        got = client.get("/events", params=params)
        assert got.status_code == 400 and got.json()["message"], params
