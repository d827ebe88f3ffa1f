"""The userland port proxy (pydeskd.network.portproxy) on 127.0.0.1 random ports in front of
local echo servers: bytes both ways, half-close, many connections, UDP, a taken port, stop,
and the alive check. No root needed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from pydeskd.containerd.errors import FailedPrecondition
from pydeskd.network import portproxy
from pydeskd.network.portproxy import (
    PortInUse,
    ProxyStartError,
    proxy_alive,
    start_proxy,
    stop_proxy,
)
from tests.unit.network_proxy.conftest import Proxies, TcpEcho, UdpEcho, free_port


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _processes_for(pid_file: Path) -> list[int]:
    """Live processes whose command line names ``pid_file`` (what a failed start must not
    leave behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(pid_file).encode() in args and state != "Z":
            found.append(int(entry.name))
    return found


def test_bytes_flow_both_ways_unchanged(proxies: Proxies, tcp_echo: TcpEcho) -> None:
    port, _, _ = proxies("tcp", tcp_echo.port)
    payload = os.urandom(8 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        echoed = _recv_all(sock)
        sender.join()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_half_close_reaches_the_service_which_can_still_answer(proxies: Proxies,
                                                               tcp_echo: TcpEcho) -> None:
    tcp_echo.after_eof = b"bye after your EOF"
    port, _, _ = proxies("tcp", tcp_echo.port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"ping")
        sock.shutdown(socket.SHUT_WR)
        assert _recv_all(sock) == b"ping" + tcp_echo.after_eof


def test_many_concurrent_connections(proxies: Proxies, tcp_echo: TcpEcho) -> None:
    port, _, _ = proxies("tcp", tcp_echo.port)
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            for round_ in range(5):
                message = f"client {index} round {round_} ".encode() * 100
                with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                    sock.sendall(message)
                    sock.shutdown(socket.SHUT_WR)
                    assert _recv_all(sock) == message
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(tcp_echo.peers) == 200


def test_a_closed_container_port_closes_the_client(proxies: Proxies) -> None:
    port, _, pid_file = proxies("tcp", free_port())
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
          contextlib.suppress(ConnectionResetError)):
        assert sock.recv(10) == b""
    assert proxy_alive(pid_file)  # and the proxy goes on


def test_dual_stack_listens_for_ipv4_and_ipv6_clients(proxies: Proxies,
                                                      tcp_echo: TcpEcho) -> None:
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
        pytest.fail("this host has no IPv6: the dual-stack case cannot be checked")
    port, _, _ = proxies("tcp", tcp_echo.port, host_ip="::", dual_stack=True)
    for address in ("127.0.0.1", "::1"):
        with socket.create_connection((address, port), timeout=10) as sock:
            sock.sendall(address.encode())
            sock.shutdown(socket.SHUT_WR)
            assert _recv_all(sock) == address.encode()


def test_udp_on_the_dual_stack_address_answers_ipv4_and_ipv6_clients(
        proxies: Proxies, udp_echo: UdpEcho) -> None:
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
        pytest.fail("this host has no IPv6: the dual-stack case cannot be checked")
    port, _, _ = proxies("udp", udp_echo.port, host_ip="::", dual_stack=True)
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(address.encode(), (address, port))
            assert client.recv(65535).partition(b":")[2] == address.encode()


def test_udp_datagrams_get_answers_through_one_socket_per_client(proxies: Proxies,
                                                                  udp_echo: UdpEcho) -> None:
    port, _, _ = proxies("udp", udp_echo.port, udp_idle_timeout=0.5)
    seen_ports = []
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for index, client in enumerate(clients):
            client.settimeout(5)
            for n in range(3):
                client.sendto(f"c{index}-{n}".encode(), ("127.0.0.1", port))
                source, _, data = client.recv(65535).partition(b":")
                assert data == f"c{index}-{n}".encode()
                seen_ports.append((index, int(source)))
        # One proxy socket per client, kept across its datagrams, distinct between clients.
        per_client = {index: {p for i, p in seen_ports if i == index} for index in range(3)}
        assert all(len(ports) == 1 for ports in per_client.values())
        assert len({next(iter(ports)) for ports in per_client.values()}) == 3
        # Idle past the timeout: the client's socket is dropped, the next datagram gets a new one.
        time.sleep(1.2)
        clients[0].sendto(b"again", ("127.0.0.1", port))
        source, _, data = clients[0].recv(65535).partition(b":")
        assert data == b"again"
        assert int(source) not in per_client[0]
    finally:
        for client in clients:
            client.close()


def test_a_large_udp_datagram_is_relayed_whole(proxies: Proxies, udp_echo: UdpEcho) -> None:
    port, _, _ = proxies("udp", udp_echo.port)
    payload = os.urandom(60000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(payload, ("127.0.0.1", port))
        assert client.recv(65535).partition(b":")[2] == payload


def test_a_taken_port_raises_port_in_use_and_leaves_nothing(tmp_path: Path,
                                                            tcp_echo: TcpEcho) -> None:
    pid_file = tmp_path / "taken.pid"
    with pytest.raises(PortInUse) as caught:
        start_proxy("tcp", "127.0.0.1", tcp_echo.port, "127.0.0.1", tcp_echo.port, pid_file)
    assert str(caught.value) == (f"Bind for 127.0.0.1:{tcp_echo.port} failed: "
                                 "port is already allocated")
    assert isinstance(caught.value, FailedPrecondition)
    assert not pid_file.exists()
    assert _processes_for(pid_file) == []
    assert list(tmp_path.iterdir()) == []


def test_a_taken_udp_port_and_a_foreign_address_are_refused(tmp_path: Path,
                                                            udp_echo: UdpEcho) -> None:
    with pytest.raises(PortInUse, match=r"Bind for 127\.0\.0\.1:\d+ failed"):
        start_proxy("udp", "127.0.0.1", udp_echo.port, "127.0.0.1", 1, tmp_path / "u.pid")
    with pytest.raises(ProxyStartError, match="cannot assign requested address"):
        start_proxy("tcp", "192.0.2.77", free_port(), "127.0.0.1", 1, tmp_path / "x.pid")
    with pytest.raises(ProxyStartError, match="protocol"):
        start_proxy("sctp", "127.0.0.1", free_port(), "127.0.0.1", 1, tmp_path / "s.pid")
    assert list(tmp_path.iterdir()) == []


def test_the_proxy_is_detached_and_holds_none_of_the_callers_fds(proxies: Proxies,
                                                                 tcp_echo: TcpEcho) -> None:
    marker = os.open("/dev/zero", os.O_RDONLY)  # inheritable on purpose
    os.set_inheritable(marker, True)
    try:
        _, pid, pid_file = proxies("tcp", tcp_echo.port)
    finally:
        os.close(marker)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[1]) != os.getpid()  # reparented: not our child
    assert os.getsid(pid) not in (0, os.getsid(0))
    targets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    assert "/dev/zero" not in targets
    # Its sockets, its epoll instance and /dev/null (stdio): nothing else.
    assert {t for t in targets if not t.startswith("socket:")} <= {"/dev/null",
                                                                   "anon_inode:[eventpoll]"}
    assert pid_file.read_text().strip() == str(pid)


def test_stop_ends_the_proxy_frees_the_port_and_is_idempotent(proxies: Proxies,
                                                              tcp_echo: TcpEcho) -> None:
    port, pid, pid_file = proxies("tcp", tcp_echo.port)
    assert proxy_alive(pid_file)
    stop_proxy(pid_file)
    assert not pid_file.exists()
    assert not proxy_alive(pid_file)
    assert _processes_for(pid_file) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    stop_proxy(pid_file)
    # The same port can be served again at once (SO_REUSEADDR past TIME_WAIT).
    again = start_proxy("tcp", "127.0.0.1", port, "127.0.0.1", tcp_echo.port, pid_file)
    assert again != pid
    stop_proxy(pid_file)


def test_a_pid_file_naming_another_process_is_never_signalled(tmp_path: Path) -> None:
    pid_file = tmp_path / "other.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert not proxy_alive(pid_file)
    stop_proxy(pid_file)  # would kill this test if it trusted the pid
    assert not pid_file.exists()
    pid_file.write_text("garbage")
    assert not proxy_alive(pid_file)
    assert not proxy_alive(tmp_path / "missing.pid")


def test_another_proxys_pid_file_does_not_vouch_for_it(proxies: Proxies, tcp_echo: TcpEcho,
                                                       tmp_path: Path) -> None:
    _, pid, _ = proxies("tcp", tcp_echo.port)
    copy = tmp_path / "copy.pid"
    copy.write_text(f"{pid}\n")
    assert not proxy_alive(copy)  # the command line names its own pid file, not this one


def test_a_killed_proxy_is_not_alive_and_stop_cleans_up(proxies: Proxies,
                                                        tcp_echo: TcpEcho) -> None:
    _, pid, pid_file = proxies("tcp", tcp_echo.port)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while proxy_alive(pid_file) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not proxy_alive(pid_file)
    stop_proxy(pid_file)
    assert not pid_file.exists()


def test_start_is_quick(proxies: Proxies, tcp_echo: TcpEcho) -> None:
    started = time.monotonic()
    proxies("tcp", tcp_echo.port)
    # ~30 ms here; the bound only catches a start that imports far too much or waits.
    assert time.monotonic() - started < 1.0


def test_without_the_launcher_the_proxy_runs_from_this_interpreter(
        proxies: Proxies, tcp_echo: TcpEcho, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    port, pid, pid_file = proxies("tcp", tcp_echo.port)
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert args[1:3] == [b"-I", b"-S"]
    assert proxy_alive(pid_file)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"boot")
        sock.shutdown(socket.SHUT_WR)
        assert _recv_all(sock) == b"boot"


@pytest.mark.parametrize("argv", [
    [],
    ["--proto", "sctp", "--host-ip", "127.0.0.1", "--host-port", "1", "--container-ip", "x",
     "--container-port", "2"],
    ["--proto", "tcp", "--host-ip", "127.0.0.1", "--host-port", "0", "--container-ip", "x",
     "--container-port", "2"],
    ["--nope", "1"],
])
def test_bad_command_lines_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="pydesk-proxy"):
        portproxy.main(argv)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_idle_and_half_closed_connections_cost_no_cpu(proxies: Proxies,
                                                      tcp_echo: TcpEcho) -> None:
    """epoll must not report a socket over and over (a hang-up, a full sink) while nothing
    can move: the proxy stays idle with connections open in every state."""
    port, pid, _ = proxies("tcp", tcp_echo.port)
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    stuck = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        half.sendall(b"x")
        half.shutdown(socket.SHUT_WR)  # the echo answers "x" and closes: never read here
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # echoed back into a client not reading
            for _ in range(2000):
                stuck.send(b"y" * 65536)
        time.sleep(0.5)
        before = _cpu_ticks(pid)
        time.sleep(1.5)
        assert _cpu_ticks(pid) - before <= 5  # clock ticks (1/100 s): ~0 when idle
        # And everything still moves afterwards.
        idle.sendall(b"still here")
        assert idle.recv(100) == b"still here"
    finally:
        for sock in (idle, half, stuck):
            sock.close()


def test_the_proxy_writes_its_pid_file_before_it_reports_ready(tmp_path: Path,
                                                                tcp_echo: TcpEcho) -> None:
    # Review finding 22: a daemon killed between the report and its own write of the pid
    # file left a root proxy that restore could not see.
    import subprocess

    pid_file = tmp_path / "proxies" / "p.pid"
    pid_file.parent.mkdir()
    argv = portproxy.proxy_command("tcp", "127.0.0.1", free_port(), "127.0.0.1",
                                   tcp_echo.port, pid_file)
    ready_r, ready_w = os.pipe()
    first = subprocess.Popen([*argv, "--ready-fd", str(ready_w)], pass_fds=(ready_w,),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(ready_w)
    pid = ""
    try:
        with os.fdopen(ready_r, "rb") as ready:
            word, _, pid = ready.read().decode().strip().partition(" ")
        first.wait(10)
        assert word == "ok" and pid.isdigit()
        # Nobody but the proxy wrote it (no daemon side ran here).
        assert pid_file.read_text().strip() == pid
        assert proxy_alive(pid_file)
        assert [p.name for p in pid_file.parent.iterdir()] == ["p.pid"]  # no temporary left
    finally:
        if pid.isdigit() and not pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        stop_proxy(pid_file)
        assert not _processes_for(pid_file)
