"""QemuUserNetBackend against a real QEMU's slirp: rules listen on the host, a taken port is
reported, remove frees the port, and the rule QEMU started with is never touched."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pydesk.forward.backend import BackendUnavailable, PortInUse, QemuUserNetBackend, RuleRefused
from pydesk.forward.desired import Forward, Proto
from tests.integration.forward.qemu_slirp import SlirpQemu, free_port


@pytest.fixture
def qemu() -> Iterator[SlirpQemu]:
    with SlirpQemu() as q:
        yield q


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def bindable(proto: Proto, port: int) -> bool:
    kind = socket.SOCK_STREAM if proto is Proto.TCP else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if proto is Proto.TCP:
            # As any server would: the connection made by listening() may linger in TIME_WAIT.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_add_listens_on_the_host_and_remove_frees_it(qemu: SlirpQemu) -> None:
    backend = QemuUserNetBackend(qemu.qmp_socket)
    ssh = Forward(Proto.TCP, "127.0.0.1", qemu.ssh_port, 22)
    assert backend.list() == {ssh}
    port, uport = free_port(), free_port(socket.SOCK_DGRAM)
    tcp = Forward(Proto.TCP, "127.0.0.1", port, port)
    udp = Forward(Proto.UDP, "127.0.0.1", uport, uport)
    backend.add(tcp)
    backend.add(udp)
    assert listening(port)
    assert not bindable(Proto.UDP, uport)
    assert backend.list() == {ssh, tcp, udp}
    backend.remove(tcp)
    backend.remove(udp)
    backend.remove(tcp)  # already gone: not an error
    assert not listening(port) and bindable(Proto.TCP, port)
    assert bindable(Proto.UDP, uport)
    assert backend.list() == {ssh}


def test_all_interfaces_rule_is_listed_and_removed(qemu: SlirpQemu) -> None:
    backend = QemuUserNetBackend(qemu.qmp_socket)
    port = free_port()
    anywhere = Forward(Proto.TCP, "0.0.0.0", port, port)
    backend.add(anywhere)
    assert anywhere in backend.list()
    assert listening(port)
    backend.remove(anywhere)
    assert anywhere not in backend.list() and not listening(port)


def test_taken_port_is_reported(qemu: SlirpQemu) -> None:
    backend = QemuUserNetBackend(qemu.qmp_socket)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PortInUse) as e:
            backend.add(Forward(Proto.TCP, "127.0.0.1", port, port))
    assert str(e.value) == f"host port {port} is already in use"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with pytest.raises(PortInUse):
            backend.add(Forward(Proto.UDP, "127.0.0.1", port, port))
    # The SSH rule is a taken port too, from QEMU's own side.
    with pytest.raises(PortInUse):
        backend.add(Forward(Proto.TCP, "127.0.0.1", qemu.ssh_port, 8022))
    assert len(backend.list()) == 1


def test_foreign_address_is_refused(qemu: SlirpQemu) -> None:
    backend = QemuUserNetBackend(qemu.qmp_socket)
    with pytest.raises(RuleRefused, match="not an address of this host"):
        backend.add(Forward(Proto.TCP, "192.0.2.77", 18080, 18080))


def test_gone_qemu_is_unavailable(qemu: SlirpQemu) -> None:
    backend = QemuUserNetBackend(qemu.qmp_socket, timeout=1, attempts=2)
    assert qemu.proc is not None
    qemu.proc.kill()
    qemu.proc.wait()
    with pytest.raises(BackendUnavailable):
        backend.list()
