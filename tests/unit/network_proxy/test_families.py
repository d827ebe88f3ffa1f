"""Which address families a published port listens on (review finding 20): ``-p P:80``
(HostIp "") serves IPv4 and IPv6, an explicit ``-p 0.0.0.0:P:80`` IPv4 only and
``-p [::]:P:80`` IPv6 only, as Docker 27+. Also the pid-file names (finding 24)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.network.model import PortMapping
from pydeskd.network.portproxy import PortInUse, stop_proxy
from pydeskd.network.proxies import PortProxies, pid_file
from tests.unit.network_proxy.conftest import TcpEcho, free_port


def _has_ipv6() -> bool:
    return socket.has_ipv6 and Path("/proc/net/if_inet6").exists()


@pytest.fixture
def publish(tmp_path: Path) -> Iterator[object]:
    started: list[Path] = []

    def start(host_ip: str, container_port: int) -> int:
        port = free_port(host="::") if _has_ipv6() else free_port()
        mapping = PortMapping("tcp", container_port, host_ip, port)
        path = pid_file(tmp_path / "proxies", "c" * 64, mapping)
        started.append(path)
        PortProxies().start(mapping, "127.0.0.1", path)
        return port

    yield start
    for path in started:
        stop_proxy(path)


def _serves(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=5) as sock:
            sock.sendall(b"hi")
            sock.shutdown(socket.SHUT_WR)
            return sock.recv(16) == b"hi"
    except OSError:
        return False


def test_every_address_is_both_families_and_explicit_ones_only_theirs(
        publish: object, tcp_echo: TcpEcho) -> None:
    if not _has_ipv6():
        pytest.fail("this host has no IPv6: the families cannot be told apart")
    start = publish
    assert callable(start)
    every = start("", tcp_echo.port)
    assert _serves("127.0.0.1", every) and _serves("::1", every)
    v4 = start("0.0.0.0", tcp_echo.port)
    assert _serves("127.0.0.1", v4) and not _serves("::1", v4)
    v6 = start("::", tcp_echo.port)
    assert _serves("::1", v6) and not _serves("127.0.0.1", v6)


def test_a_taken_port_on_every_address_says_0_0_0_0(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6 if _has_ipv6() else socket.AF_INET) as holder:
        holder.bind(("::" if _has_ipv6() else "0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        mapping = PortMapping("tcp", 80, "", port)
        path = pid_file(tmp_path, "c" * 64, mapping)
        with pytest.raises(PortInUse, match=rf"Bind for 0\.0\.0\.0:{port} failed: port is "
                           "already allocated"):
            PortProxies().start(mapping, "127.0.0.1", path)
        with contextlib.suppress(OSError):
            stop_proxy(path)


@pytest.mark.parametrize("host_ip", ["../../etc/x", "..", "a/b", "1.2.3.4/../..", "::1"])
def test_pid_files_never_leave_their_directory(tmp_path: Path, host_ip: str) -> None:
    path = pid_file(tmp_path, "c" * 64, PortMapping("tcp", 80, host_ip, 8080))
    assert path.parent == tmp_path and ".." not in path.name and "/" not in path.name
