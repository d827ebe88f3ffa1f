"""The port proxy out of file descriptors (review finding 4): a proxy whose fd limit cannot
be raised refuses the connections it has no fds for and keeps serving; it raises its soft
limit to the hard one when it can. The proxy runs in the foreground under ``prlimit``."""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.network import portrelay
from pydeskd.network.portproxy import proxy_command
from tests.unit.network_proxy.conftest import TcpEcho, free_port


@contextlib.contextmanager
def _limited_proxy(tmp_path: Path, target_port: int, soft: int, hard: int
                   ) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    argv = proxy_command("tcp", "127.0.0.1", port, "127.0.0.1", target_port,
                         tmp_path / "p.pid")
    proc = subprocess.Popen(["prlimit", f"--nofile={soft}:{hard}", "--", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the proxy never listened"
                time.sleep(0.02)
        yield port, proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _echoes(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)
            return sock.recv(16) == b"ping"
    except OSError:
        return False


def test_running_out_of_fds_refuses_connections_and_keeps_serving(
        tmp_path: Path, tcp_echo: TcpEcho) -> None:
    with _limited_proxy(tmp_path, tcp_echo.port, 40, 40) as (port, proc):
        held = []
        try:
            for _ in range(20):  # far more than 40 fds hold at six per connection
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"x")
                held.append(sock)
            time.sleep(0.3)
            assert proc.poll() is None, "the proxy died out of fds"
            served = 0
            for sock in held:
                sock.settimeout(2)
                with contextlib.suppress(OSError):
                    served += sock.recv(1) == b"x"
            assert 1 <= served < 20  # some served, the rest refused
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert proc.poll() is None
        assert _echoes(port)  # the freed fds serve new clients


def test_the_soft_fd_limit_is_raised_to_the_hard_limit(tmp_path: Path,
                                                       tcp_echo: TcpEcho) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    with _limited_proxy(tmp_path, tcp_echo.port, 64, hard) as (_, proc):
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)]


@pytest.mark.parametrize(("fds", "expected"), [(40, 4), (10, 1), (1 << 20, 174760)])
def test_the_connection_cap_fits_the_fd_limit(fds: int, expected: int) -> None:
    assert portrelay.max_connections(fds) == expected
