"""Hijacked streams through the real front on a unix socket, driven by the official docker CLI
(``docker attach``) and docker-py (``attach_socket``, ``exec_start(socket=True)``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import docker  # type: ignore[import-untyped]
import pytest

from pydeskd.api.app import create_app, hijack_routes
from pydeskd.api.server import HttpFront
from tests.integration.api.fake_containers import EXIT_CODE

MODULES = ("pydeskd.api.routes.system", "tests.integration.api.fake_containers")
DOCKER = shutil.which("docker") or "/usr/bin/docker"


@pytest.fixture
def front_socket() -> Iterator[Path]:
    """The front serving the fake container API, on its own loop in a thread."""
    sock_dir = Path(tempfile.mkdtemp(prefix="pdh-", dir="/tmp"))
    sock = sock_dir / "docker.sock"
    loop = asyncio.new_event_loop()
    front = HttpFront(create_app(None, MODULES), hijack_routes(MODULES))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(front.listen_unix(sock, group=None))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield sock
    finally:
        asyncio.run_coroutine_threadsafe(front.shutdown(grace=1.0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_docker_attach_streams_stdin_half_closes_and_propagates_the_exit_code(
        front_socket: Path, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{front_socket}", "DOCKER_CONFIG": str(tmp_path),
           "PATH": "/usr/local/bin:/usr/bin:/bin"}
    result = subprocess.run([DOCKER, "attach", "web"], input=b"hello\nworld\n",
                            capture_output=True, env=env, timeout=30, check=False)
    assert result.stdout == b"HELLO\nWORLD\n", result.stderr
    assert result.stderr == b"bye\n"
    assert result.returncode == EXIT_CODE, result.stderr
    missing = subprocess.run([DOCKER, "attach", "missing"], capture_output=True, env=env,
                             timeout=30, check=False)
    assert missing.returncode == 1
    assert b"No such container: missing" in missing.stderr


def test_docker_py_attach_socket_upgrade_and_half_close(front_socket: Path) -> None:
    client = docker.APIClient(base_url=f"unix://{front_socket}", version="1.45")
    try:
        sock = client.attach_socket("web", params={"stdin": 1, "stdout": 1, "stream": 1,
                                                   "framed": 0})
        raw: socket.socket = sock._sock
        raw.settimeout(10)
        raw.sendall(b"abc")
        assert raw.recv(3) == b"ABC"
        raw.sendall(b"def")
        raw.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := raw.recv(4096):
            rest += chunk
        assert rest == b"DEFbye\n"
        sock.close()
        # The same client (a pooled connection) keeps working after a hijack.
        assert client.ping() is True
    finally:
        client.close()


def test_docker_py_exec_start_socket_reads_the_body_and_streams(front_socket: Path) -> None:
    client = docker.APIClient(base_url=f"unix://{front_socket}", version="1.50")
    try:
        sock = client.exec_start("e1", socket=True, tty=True)
        raw: socket.socket = sock._sock
        raw.settimeout(10)
        raw.sendall(b"x")
        first = b""
        while not first.endswith(b"\n"):
            first += raw.recv(1)
        assert json.loads(first) == {"Tty": True, "Detach": False}
        raw.sendall(b"y")
        raw.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := raw.recv(4096):
            rest += chunk
        assert rest == b"XYbye\n"
        sock.close()
    finally:
        client.close()


def test_hijack_route_under_a_version_too_new_is_refused(front_socket: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(front_socket))
        s.sendall(b"POST /v1.99/containers/web/attach HTTP/1.1\r\nHost: d\r\n"
                  b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n")
        reply = b""
        while b"}" not in reply and (chunk := s.recv(4096)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"client version 1.99 is too new" in reply
