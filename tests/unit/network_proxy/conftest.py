"""Fixtures for the port proxy's tests: echo servers standing in for a container's service
(TCP and UDP, on 127.0.0.1), and proxies that are stopped after each test."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.network.portproxy import proxy_alive, start_proxy, stop_proxy


class TcpEcho:
    """Echoes each connection's bytes; at EOF it sends ``after_eof`` and closes its side."""

    def __init__(self) -> None:
        self.after_eof = b""
        self.peers: list[tuple[str, int]] = []
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer)
            self.connections.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(1 << 16):
                conn.sendall(data)
            conn.sendall(self.after_eof)
            conn.shutdown(socket.SHUT_WR)
        conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class UdpEcho:
    """Answers each datagram with ``port:`` + the datagram (the sender's port, as seen here)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            if not data:
                continue
            self.sock.sendto(f"{peer[1]}:".encode() + data, peer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def tcp_echo() -> Iterator[TcpEcho]:
    server = TcpEcho()
    yield server
    server.close()


@pytest.fixture
def udp_echo() -> Iterator[UdpEcho]:
    server = UdpEcho()
    yield server
    server.close()


Proxies = Callable[..., tuple[int, int, Path]]


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Proxies]:
    """Starts proxies (proto, container port, host ip=127.0.0.1, **options) on free host
    ports: returns (host port, pid, pid file). Every one is stopped at the end."""
    started: list[Path] = []

    def start(proto: str, container_port: int, host_ip: str = "127.0.0.1",
              **options: Any) -> tuple[int, int, Path]:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        host_port = free_port(kind, "::1" if ":" in host_ip else "127.0.0.1")
        pid_file = tmp_path / f"{proto}-{host_port}.pid"
        started.append(pid_file)
        pid = start_proxy(proto, host_ip, host_port, "127.0.0.1", container_port, pid_file,
                          **options)
        return host_port, pid, pid_file

    yield start
    for pid_file in started:
        stop_proxy(pid_file)
        assert not proxy_alive(pid_file)
