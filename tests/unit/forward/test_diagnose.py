"""Why QEMU refused a rule: the diagnostic bind tells a taken port from a foreign address."""

from __future__ import annotations

import socket

from pydesk.forward.backend import PortInUse, RuleRefused, diagnose
from pydesk.forward.desired import Forward, Proto

REPLY = "Could not set up host forwarding rule 'tcp:127.0.0.1:1-10.0.2.15:80'"


def test_taken_tcp_port() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        error = diagnose(Forward(Proto.TCP, "127.0.0.1", port, port, "web", "80/tcp"), REPLY)
    assert isinstance(error, PortInUse)
    assert error.message == f"host port {port} is already in use"


def test_taken_udp_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        assert isinstance(diagnose(Forward(Proto.UDP, "127.0.0.1", port, port), REPLY), PortInUse)


def test_address_not_on_this_host() -> None:
    error = diagnose(Forward(Proto.TCP, "192.0.2.77", 18080, 18080), REPLY)
    assert type(error) is RuleRefused
    assert error.message == "192.0.2.77 is not an address of this host"


def test_unknown_cause_keeps_qemus_words() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    error = diagnose(Forward(Proto.TCP, "127.0.0.1", free, free), "unrecognized netdev id 'x'")
    assert type(error) is RuleRefused and "unrecognized netdev id" in error.message
