"""The host socket: modes, the stale-socket rule, close() ending live connections, and a fake
daemon behind it (a thread answering on a unix socket)."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydesk.proxy import VM_DOWN_MESSAGE, ApiProxy, ProxySocketError, Stream, unix_opener

PONG = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """sun_path holds 108 bytes: pytest's tmp_path can be longer."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="pd-pxu-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class FakeDaemon:
    """Answers every request head with 200 OK, keep-alive unless asked to close."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(64)
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        buffer = b""
        try:
            while data := conn.recv(4096):
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    conn.sendall(PONG)
                    if b"Connection: close" in head:
                        return
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


def ping(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        return got


def test_socket_private_and_removed_at_close(short_dir: Path) -> None:
    daemon = FakeDaemon(short_dir / "daemon.sock")
    path = short_dir / "run" / "docker.sock"
    try:
        with ApiProxy(path, unix_opener(str(short_dir / "daemon.sock"))) as proxy:
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert ping(path) == PONG
            assert proxy.live_connections in (0, 1)
            assert sorted(p.name for p in path.parent.iterdir()) == ["docker.sock"]
        assert not path.exists()
    finally:
        daemon.close()


def test_stale_socket_replaced_live_one_kept(short_dir: Path) -> None:
    path = short_dir / "docker.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing answers: a crashed agent's leftover
    opener = unix_opener(str(short_dir / "none.sock"))
    with ApiProxy(path, opener) as first:
        # A second proxy on the same path must not steal a live one's socket.
        with pytest.raises(ProxySocketError, match="already serves"):
            ApiProxy(path, opener).start()
        assert first.socket_path.exists()
        assert b"502" in ping(path)
    assert not path.exists()


def test_a_file_that_is_not_a_socket_is_never_replaced(short_dir: Path) -> None:
    path = short_dir / "docker.sock"
    path.write_text("mine")
    with pytest.raises(ProxySocketError, match="not a socket"):
        ApiProxy(path, unix_opener("/nonexistent")).start()
    assert path.read_text() == "mine"


def test_too_long_a_path_is_a_clear_error(short_dir: Path) -> None:
    path = short_dir / ("d" * 60) / ("s" * 60)
    with pytest.raises(ProxySocketError, match="too long"):
        ApiProxy(path, unix_opener("/nonexistent")).start()


def test_close_does_not_remove_a_socket_it_no_longer_owns(short_dir: Path) -> None:
    path = short_dir / "docker.sock"
    proxy = ApiProxy(path, unix_opener("/nonexistent")).start()
    path.unlink()
    replacement = socket.socket(socket.AF_UNIX)
    replacement.bind(str(path))
    try:
        proxy.close()
        assert path.exists()
    finally:
        replacement.close()


def test_vm_down_message(short_dir: Path) -> None:
    def opener() -> Stream:
        raise OSError("cannot connect to the guest's sshd at 127.0.0.1:2222")

    with ApiProxy(short_dir / "docker.sock", opener) as proxy:
        answer = ping(proxy.socket_path)
    assert answer.startswith(b"HTTP/1.1 502 ")
    message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]
    assert message == f"{VM_DOWN_MESSAGE}: cannot connect to the guest's sshd at 127.0.0.1:2222"


def test_close_ends_live_connections_and_threads(short_dir: Path) -> None:
    daemon = FakeDaemon(short_dir / "daemon.sock")
    before = threading.active_count()
    proxy = ApiProxy(short_dir / "docker.sock", unix_opener(str(short_dir / "daemon.sock")))
    proxy.start()
    clients = []
    for _ in range(5):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(10)
        c.connect(str(proxy.socket_path))
        c.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while len(got) < len(PONG):  # head and body may come in separate reads
            got += c.recv(100)
        assert got == PONG
        clients.append(c)
    assert proxy.live_connections == 5
    proxy.close()
    try:
        for c in clients:
            assert c.recv(100) == b""  # the proxy ended it
        assert proxy.live_connections == 0
        deadline = time.monotonic() + 5
        while threading.active_count() > before + 1 + len(daemon.connections):
            assert time.monotonic() < deadline, threading.enumerate()
            time.sleep(0.05)
        # the upstream connections were closed too: the fake daemon's threads ended
        deadline = time.monotonic() + 5
        while any(conn.fileno() != -1 for conn in daemon.connections):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        for c in clients:
            c.close()
        daemon.close()


def test_serve_forever_in_the_callers_thread(short_dir: Path) -> None:
    proxy = ApiProxy(short_dir / "docker.sock", unix_opener("/nonexistent"))
    proxy.bind()
    server = threading.Thread(target=proxy.serve_forever)
    server.start()
    assert b"502" in ping(proxy.socket_path)
    proxy.close()
    server.join(5)
    assert not server.is_alive()
    assert not os.path.exists(short_dir / "docker.sock")
