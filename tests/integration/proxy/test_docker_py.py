"""docker-py through the proxy (keep-alive connections, attach socket, exec streams, logs), the
bind rewrite with a resolver, the port-binding label, and 50 parallel clients."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker  # type: ignore[import-untyped]
import pytest

from pydesk.proxy import HOST_PORT_BINDINGS_LABEL, ApiProxy
from tests.integration.proxy.conftest import BUSYBOX, Proxied, start_proxy
from tests.support.pydeskd import Pydeskd


def _recv_until(sock: socket.socket, needle: bytes, timeout: float = 20) -> bytes:
    got = b""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while needle not in got and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_containers_run_logs_exec(p: Proxied) -> None:
    client = p.client()
    assert client.ping() is True
    # One pooled connection carries many requests (keep-alive through the proxy).
    assert client.containers.run(BUSYBOX, ["echo", "hello"], remove=True) == b"hello\n"
    c = client.containers.run(BUSYBOX, ["sh", "-c", "for i in 1 2 3; do echo l$i; "
                                        "sleep 0.2; done; sleep 60"], detach=True, name="py1")
    deadline = time.monotonic() + 20
    while c.logs() != b"l1\nl2\nl3\n":
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.1)
    result = c.exec_run(["sh", "-c", "echo o1; echo e1 >&2; exit 3"], demux=True)
    assert (result.exit_code, result.output) == (3, (b"o1\n", b"e1\n"))
    streamed = c.exec_run(["sh", "-c", "echo a; sleep 0.2; echo b"], stream=True)
    assert b"".join(streamed.output) == b"a\nb\n"
    c.kill()
    assert c.wait(timeout=20)["StatusCode"] == 137


def test_attach_socket(p: Proxied) -> None:
    client = p.client()
    c = client.containers.run(BUSYBOX, "sh", detach=True, tty=True, stdin_open=True,
                              name="att")
    wrapped = c.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    sock = wrapped._sock
    try:
        sock.sendall(b"echo attached-$((1+1))\n")
        assert b"attached-2" in _recv_until(sock, b"attached-2")
        sock.sendall(b"exit 6\n")
        assert c.wait(timeout=20)["StatusCode"] == 6
    finally:
        wrapped.close()


def test_port_bindings_cleared_for_the_guest_and_kept_in_the_label(p: Proxied) -> None:
    client = p.client()
    c = client.containers.create(BUSYBOX, ["sleep", "60"], name="ports",
                                 ports={"80/tcp": ("127.0.0.1", 18080)}, labels={"mine": "1"})
    attrs = client.api.inspect_container(c.id)
    assert attrs["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "",
                                                               "HostPort": "18080"}]}
    labels = attrs["Config"]["Labels"]
    assert labels["mine"] == "1"
    assert json.loads(labels[HOST_PORT_BINDINGS_LABEL]) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}]}


class MapResolver:
    """Stands in for the sync manager: each host dir maps to a prepared "guest copy" dir."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping
        self.asked: list[str] = []

    def guest_path(self, host_path: str, *, create: bool = False) -> str:
        self.asked.append(host_path)
        if host_path not in self.mapping:
            raise FileNotFoundError(f"{host_path} does not exist on the host")
        return self.mapping[host_path]


def test_bind_sources_are_rewritten_through_the_resolver(daemon: Pydeskd, tmp_path: Path
                                                         ) -> None:
    host_dir, guest_dir = tmp_path / "host-side", tmp_path / "guest-copy"
    host_dir.mkdir()
    guest_dir.mkdir()
    (host_dir / "who").write_text("host\n")
    (guest_dir / "who").write_text("guest copy\n")
    resolver = MapResolver({str(host_dir): str(guest_dir)})
    directory = Path(tempfile.mkdtemp(prefix="pd-pxr-", dir="/tmp"))
    server = start_proxy(daemon, directory, resolver)
    p = Proxied(daemon, server.socket_path)
    try:
        assert p.out("run", "--rm", "-v", f"{host_dir}:/data:ro", BUSYBOX,
                     "cat", "/data/who") == "guest copy"
        assert p.out("run", "--rm", "--mount", f"type=bind,source={host_dir},target=/m",
                     BUSYBOX, "cat", "/m/who") == "guest copy"
        assert resolver.asked == [str(host_dir), str(host_dir)]
        # A named volume is not a path: untouched, never asked about.
        assert p.out("run", "--rm", "-v", "pxvol:/v", BUSYBOX, "sh", "-c",
                     "echo ok > /v/f && cat /v/f") == "ok"
        assert len(resolver.asked) == 2
        # The resolver's error reaches the user as the daemon's would (400, the message).
        failed = p.docker("run", "--rm", "-v", "/no/such/dir:/x", BUSYBOX, "true", check=False)
        assert failed.returncode == 125
        assert b"/no/such/dir does not exist on the host" in failed.stderr
        # ... and the connection goes on: docker-py's pool reuses it after the error.
        client = docker.DockerClient(base_url=p.host)
        try:
            with pytest.raises(docker.errors.APIError) as err:
                client.containers.create(BUSYBOX, "true", volumes=["/nope:/x"])
            assert err.value.status_code == 400
            assert client.ping() is True
        finally:
            client.close()
    finally:
        daemon.remove_containers()
        daemon.docker("volume", "rm", "pxvol", check=False)
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


def _ping(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
                  b"GET /v1.41/_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        return got


def test_fifty_parallel_clients(p: Proxied, proxy: ApiProxy) -> None:
    start = threading.Barrier(50)

    def one(_: int) -> bytes:
        start.wait(timeout=30)
        return _ping(proxy.socket_path)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(one, range(50)))
    for answer in answers:
        assert answer.count(b"HTTP/1.1 200") == 2 and answer.endswith(b"OK"), answer
    deadline = time.monotonic() + 10
    while proxy.live_connections:
        assert time.monotonic() < deadline, "connections not released"
        time.sleep(0.05)


class CreatingResolver:
    """Stands in for the sync manager on a native daemon (guest path = host path): makes a
    missing source when asked to, as SyncManager.guest_path(create=True) does."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, bool]] = []

    def guest_path(self, host_path: str, *, create: bool = False) -> str:
        self.asked.append((host_path, create))
        if not Path(host_path).exists():
            if not create:
                raise FileNotFoundError(f"bind source path does not exist: {host_path}")
            Path(host_path).mkdir(parents=True)
        return host_path


def test_missing_bind_source_created_as_dockerd_does(daemon: Pydeskd, tmp_path: Path) -> None:
    # review finding 9: -v /missing:/x creates the directory; --mount type=bind does not
    resolver = CreatingResolver()
    directory = Path(tempfile.mkdtemp(prefix="pd-pxc-", dir="/tmp"))
    server = start_proxy(daemon, directory, resolver)
    p = Proxied(daemon, server.socket_path)
    try:
        made = tmp_path / "data" / "mysql"
        assert p.out("run", "--rm", "-v", f"{made}:/x", BUSYBOX, "sh", "-c",
                     "echo hi > /x/f && cat /x/f") == "hi"
        assert (made / "f").read_text() == "hi\n"
        gone = tmp_path / "gone"
        failed = p.docker("run", "--rm", "--mount", f"type=bind,source={gone},target=/m",
                          BUSYBOX, "true", check=False)
        assert failed.returncode == 125
        assert (b'invalid mount config for type "bind": bind source path does not exist: '
                + str(gone).encode()) in failed.stderr
        assert not gone.exists()
        assert resolver.asked == [(str(made), True), (str(gone), False)]
    finally:
        daemon.remove_containers()
        server.close()
        shutil.rmtree(directory, ignore_errors=True)
