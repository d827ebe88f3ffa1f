"""Create requests Docker refuses: pydesk's decoding and validate_create give the same message
as the real Docker Engine (20.10 here), and accept what it accepts.

pydesk follows Docker 28 where 20.10 differs, so these are left out or adjusted: the
restart-policy, isolation and CPU-range wordings and the port in a port error changed;
28 prefixes decoding errors with "invalid JSON: " and names its request type
CreateRequest; 20.10 answered 500 for decoding and --security-opt errors (28: 400); and 28
refuses at create what 20.10 only refused at start (STRICTER_IN_28).
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types import Config, HostConfig, validate_create
from tests.support.busybox import make_rootfs
from tests.support.docker_engine import DockerEngine

IMAGE = "pydesk-validation-busybox:latest"

CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"Env": "A=1"}, {}), ({"Tty": "yes"}, {}), ({"Cmd": 5}, {}),
    ({}, {"Memory": "1g"}), ({}, {"Memory": 1.5}), ({}, {"CapAdd": "ALL"}),
    ({}, {"RestartPolicy": {"MaximumRetryCount": "3"}}),
    ({}, {"NanoCpus": 10**9, "CpuPeriod": 100000}), ({}, {"NanoCpus": 10**9, "CpuQuota": 50000}),
    ({}, {"Memory": 1024}), ({}, {"Memory": 64 << 20, "MemorySwap": 32 << 20}),
    ({}, {"MemorySwap": 64 << 20}), ({}, {"Memory": 64 << 20, "MemoryReservation": 128 << 20}),
    ({}, {"MemoryReservation": 1024}), ({}, {"CpuPeriod": 10}), ({}, {"CpuQuota": 10}),
    ({}, {"AutoRemove": True, "RestartPolicy": {"Name": "always"}}),
    ({"Hostname": "x"}, {"NetworkMode": "container:abc"}), ({"Hostname": "x"}, {"UTSMode": "host"}),
    ({}, {"NetworkMode": "container:abc", "Dns": ["1.1.1.1"]}),
    ({}, {"NetworkMode": "container:abc", "ExtraHosts": ["a:1.2.3.4"]}),
    ({}, {"CapAdd": ["NOPE"]}), ({}, {"CapDrop": ["nope"]}),
    ({}, {"ExtraHosts": ["nohost"]}), ({}, {"ExtraHosts": ["db:999.1.1.1"]}),
    ({}, {"ShmSize": -1}), ({}, {"OomScoreAdj": 5000}), ({}, {"Tmpfs": {"run": ""}}),
    ({}, {"Mounts": [{"Type": "bind", "Source": "/no/such/dir", "Target": "/x"}]}),
    ({}, {"Mounts": [{"Type": "bind", "Target": "/x"}]}),
    ({}, {"Mounts": [{"Type": "bind", "Source": "rel", "Target": "/x"}]}),
    ({}, {"Mounts": [{"Type": "volume", "Target": "/"}]}),
    ({}, {"Mounts": [{"Type": "volume", "Target": "rel"}]}),
    ({}, {"Mounts": [{"Type": "tmpfs", "Source": "x", "Target": "/t"}]}),
    ({}, {"Mounts": [{"Type": "tmpfs", "Target": "/t", "BindOptions": {}}]}),
    ({}, {"Mounts": [{"Type": "floppy", "Target": "/t"}]}),
    ({"WorkingDir": "rel"}, {}), ({"Env": ["=x"]}, {}), ({"StopSignal": "SIGNOPE"}, {}),
    ({"Healthcheck": {"Interval": 10}}, {}), ({"Healthcheck": {"Timeout": 10}}, {}),
    ({"Healthcheck": {"Retries": -1}}, {}), ({"Healthcheck": {"StartPeriod": 10}}, {}),
    ({}, {"SecurityOpt": ["bogus"]}), ({}, {"SecurityOpt": ["foo=bar"]}),
    ({}, {"SecurityOpt": ["no-new-privileges=maybe"]}),
    # accepted by both
    ({}, {"CapAdd": "NET_ADMIN", "CapDrop": ["mknod"]}), ({"Cmd": "true"}, {}),
    ({}, {"Memory": 64 << 20, "MemorySwap": -1, "RestartPolicy": {"Name": "on-failure",
                                                                  "MaximumRetryCount": 2}}),
    ({"Env": ["A"], "Healthcheck": {"Interval": 10**9}}, {"SecurityOpt": ["apparmor=x"]}),
]
# Refused by Docker 28 (and pydesk) at create; 20.10 created the container and failed at start.
STRICTER_IN_28 = [({}, {"CpuShares": -1}), ({}, {"IpcMode": "bogus"}),
                  ({}, {"PidMode": "container:"}), ({}, {"UTSMode": "private"})]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    rootfs = tmp_path_factory.mktemp("validation") / "rootfs"
    make_rootfs(rootfs)
    with DockerEngine() as docker:
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], check=True,
                             capture_output=True).stdout
        docker.docker("import", "-", IMAGE, input=tar)
        yield docker


@pytest.mark.parametrize(("config", "host"), STRICTER_IN_28)
def test_refused_at_create_as_docker_28(engine: DockerEngine, config: dict[str, Any],
                                        host: dict[str, Any]) -> None:
    body = {"Image": IMAGE, "Cmd": ["true"], **config, "HostConfig": host}
    status, created = docker_message(engine, body)
    assert status == 201  # 20.10: refused only at start
    engine.docker("rm", "-f", json.loads(created)["Id"])
    assert ours(body).startswith(("invalid CPU shares (-1)", "invalid IPC mode: bogus",
                                  "invalid PID mode: container:", "invalid UTS mode: private"))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("docker", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


def docker_message(engine: DockerEngine, body: dict[str, Any]) -> tuple[int, str]:
    """POST /containers/create to the engine; (status, message or the whole body)."""
    conn = _UnixConnection(str(engine.socket))
    try:
        conn.request("POST", "/v1.41/containers/create", json.dumps(body),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    return response.status, json.loads(text).get("message", text)


def ours(body: dict[str, Any]) -> str:
    try:
        config = Config.from_api(body)
        host = HostConfig.from_api(body.get("HostConfig"))
        validate_create(config, host, cpu_count=2,
                        bind_source_exists=lambda p: Path(p).exists())
    except InvalidArgument as e:
        return str(e)
    return "accepted"


@pytest.mark.parametrize(("config", "host"), CASES, ids=[json.dumps(c | h)[:60] for c, h in CASES])
def test_same_400_as_docker(engine: DockerEngine, config: dict[str, Any],
                            host: dict[str, Any]) -> None:
    body = {"Image": IMAGE, "Cmd": ["true"], **config, "HostConfig": host}
    status, message = docker_message(engine, body)
    if status == 201:
        engine.docker("rm", "-f", json.loads(message)["Id"])
        assert ours(body) == "accepted"
        return
    decoding = message.startswith("json: ") or "--security-opt" in message
    assert status == (500 if decoding else 400), message
    # Docker 28 prefixes decoding errors with "invalid JSON: " and names its request type
    # CreateRequest (20.10: ContainerConfigWrapper).
    expected = message.replace("ContainerConfigWrapper.", "CreateRequest.")
    if expected.startswith("json: "):
        expected = "invalid JSON: " + expected
    assert ours(body) == expected
