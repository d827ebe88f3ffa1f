"""The real pydeskd, started by the fixture, against the official docker CLI and docker-py."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.pydeskd import Pydeskd


@pytest.fixture
def pydeskd(tmp_path: Path) -> Pydeskd:  # type: ignore[misc]
    with Pydeskd(tmp_path) as daemon:
        yield daemon


def _stamp(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_docker_version_and_info(pydeskd: Pydeskd) -> None:
    version = json.loads(pydeskd.docker("version", "--format", "{{json .}}").stdout)
    assert version["Server"]["ApiVersion"] == "1.50"
    assert version["Server"]["MinAPIVersion"] == "1.41"
    assert version["Client"]["ApiVersion"] == "1.50"
    info = json.loads(pydeskd.docker("info", "--format", "{{json .}}").stdout)
    assert info["DockerRootDir"] == str(pydeskd.data_root)
    assert info["Driver"] == "overlayfs"
    assert "ServerErrors" not in info
    text = pydeskd.docker("info").stdout.decode()
    assert "Docker Root Dir: " + str(pydeskd.data_root) in text
    assert "Default Runtime: runc" in text


def test_docker_py_ping_and_version(pydeskd: Pydeskd) -> None:
    client = pydeskd.client(version="auto")
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.50"
    assert client.api.api_version == "1.50"
    old = pydeskd.client(version="1.41")
    assert old.ping() is True and old.info()["OSType"] == "linux"


def test_system_events_since_until_and_live(pydeskd: Pydeskd, tmp_path: Path) -> None:
    start = time.time_ns()
    pydeskd.docker("import", "-", "pd-events:one", input=_rootfs_tar())
    pydeskd.docker("tag", "pd-events:one", "pd-events:two")
    end = time.time_ns()
    out = pydeskd.docker("system", "events", "--since", _stamp(start), "--until", _stamp(end),
                         "--format", "{{json .}}", timeout=30).stdout.decode()
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["Type"], e["Action"]) for e in events] == [("image", "import"),
                                                          ("image", "tag")]
    assert events[1]["Actor"]["Attributes"]["name"] == "pd-events:two"
    # A live stream while another client works, with a filter.
    import subprocess
    live = pydeskd.popen_docker("events", "--filter", "event=tag", "--format",
                                "{{.Action}} {{.Actor.Attributes.name}}",
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # the CLI connects and gets its headers
        pydeskd.docker("tag", "pd-events:one", "pd-events:three")
        assert live.stdout is not None
        line = live.stdout.readline().decode().strip()
        assert line == "tag pd-events:three"
    finally:
        live.send_signal(signal.SIGINT)
        live.wait(timeout=10)


def test_malformed_requests_get_4xx_and_the_daemon_keeps_serving(pydeskd: Pydeskd) -> None:
    import socket
    for raw in (b"POST /v1.50/images/create?fromImage= HTTP/1.1\r\nHost: d\r\n"
                b"Content-Length: 5\r\n\r\n{oops",
                b"GET /v1.99/version HTTP/1.1\r\nHost: d\r\n\r\n",
                b"POST /v1.50/containers/create HTTP/1.1\r\nHost: d\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000001\r\n\r\n{",
                b"NOT HTTP AT ALL\r\n\r\n"):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(pydeskd.socket))
            s.sendall(raw)
            reply = b""
            while b'"}' not in reply and (chunk := s.recv(4096)):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 4"), reply
        assert b'{"message": "' in reply, reply
    assert pydeskd.client().ping() is True


def test_sigterm_removes_socket_and_pidfile(tmp_path: Path) -> None:
    daemon = Pydeskd(tmp_path)
    daemon.start()
    assert daemon.pidfile.read_text().strip() == str(daemon.proc.pid if daemon.proc else 0)
    sock = daemon.socket
    assert oct(sock.stat().st_mode & 0o777) == oct(0o660)
    import grp
    assert sock.stat().st_gid == grp.getgrnam("docker").gr_gid
    assert daemon.stop() == 0
    assert not sock.exists() and not daemon.pidfile.exists()


def test_config_errors_exit_1_with_dockerds_message(tmp_path: Path) -> None:
    daemon = Pydeskd(tmp_path, config={"colour": "blue"})
    with pytest.raises(RuntimeError, match="don't match any configuration option: colour"):
        daemon.start()
    daemon.stop()
    conflict = Pydeskd(tmp_path / "b", config={"debug": True}, extra_args=("--debug",))
    with pytest.raises(RuntimeError, match="specified both as a flag and in the configuration"):
        conflict.start()
    conflict.stop()


def test_a_second_daemon_on_the_same_pidfile_is_refused(pydeskd: Pydeskd,
                                                        tmp_path: Path) -> None:
    second = Pydeskd(tmp_path / "second")
    second.pidfile = pydeskd.pidfile
    with pytest.raises(RuntimeError, match="pid file found"):
        second.start()
    second.stop()
    assert pydeskd.client().ping() is True
    assert os.path.exists(pydeskd.pidfile)


def test_sigterm_ends_event_streams_at_once(tmp_path: Path) -> None:
    import subprocess
    daemon = Pydeskd(tmp_path)
    daemon.start()
    try:
        live = daemon.popen_docker("events", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 3.0  # not the 5 s grace of busy requests
        live.wait(timeout=10)
    finally:
        daemon.stop()


def test_docker_py_events_decode_with_since_until(pydeskd: Pydeskd) -> None:
    start = time.time_ns()
    pydeskd.docker("import", "-", "pd-py:one", input=_rootfs_tar())
    end = time.time_ns()
    client = pydeskd.client(version="auto")
    events = list(client.events(since=start / 1e9, until=end / 1e9 + 0.001, decode=True))
    assert [(e["Type"], e["Action"]) for e in events] == [("image", "import")]
    assert events[0]["Actor"]["Attributes"]["name"].endswith("pd-py:one")


def test_loopback_tcp_host_serves_too(tmp_path: Path) -> None:
    from tests.support.registry import free_port
    port = free_port()
    with Pydeskd(tmp_path, extra_args=("-H", f"tcp://127.0.0.1:{port}")) as daemon:
        got = daemon.docker("-H", f"tcp://127.0.0.1:{port}", "version", "--format",
                            "{{.Server.APIVersion}}")
        assert got.stdout.strip() == b"1.50"
        assert daemon.docker("version").returncode == 0  # the unix socket as well
