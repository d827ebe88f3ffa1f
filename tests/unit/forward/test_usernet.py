"""``info usernet`` parsing and the hostfwd command lines (QEMU 7.2's output, captured here)."""

from __future__ import annotations

from pydesk.forward.desired import Forward, Proto
from pydesk.forward.usernet import (
    HostForwardRule,
    add_command,
    add_failed,
    parse_usernet,
    remove_command,
    remove_failed,
)

INFO = (
    "Hub -1 (net0):\r\n"
    "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
    "  TCP[HOST_FORWARD]  15               * 18082       10.0.2.15    80     0     0\r\n"
    "  TCP[HOST_FORWARD]  13       127.0.0.1 18080       10.0.2.15    80     0     0\r\n"
    "  TCP[ESTABLISHED]   17       127.0.0.1 41234       10.0.2.15    80     0     0\r\n"
    "  TCP[HOST_FORWARD]   8       127.0.0.1 12222       10.0.2.15    22     0     0\r\n"
    "  UDP[HOST_FORWARD]  14       127.0.0.1 18081       10.0.2.15    81     0     0\r\n"
    "  UDP[236 sec]       19        10.0.2.15 45678        10.0.2.3    53     0     0\r\n"
    "Hub -1 (other):\r\n"
    "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
    "  TCP[HOST_FORWARD]  21       127.0.0.1 19999       10.0.2.15    80     0     0\r\n"
)


def test_parses_only_host_forward_rows_of_the_netdev() -> None:
    assert parse_usernet(INFO, "net0") == [
        HostForwardRule(Proto.TCP, "0.0.0.0", 18082, "10.0.2.15", 80),
        HostForwardRule(Proto.TCP, "127.0.0.1", 18080, "10.0.2.15", 80),
        HostForwardRule(Proto.TCP, "127.0.0.1", 12222, "10.0.2.15", 22),
        HostForwardRule(Proto.UDP, "127.0.0.1", 18081, "10.0.2.15", 81),
    ]
    assert [r.host_port for r in parse_usernet(INFO, "other")] == [19999]
    assert parse_usernet(INFO, "missing") == []
    assert parse_usernet("", "net0") == []


def test_rule_to_forward() -> None:
    rule = parse_usernet(INFO, "net0")[3]
    assert rule.forward() == Forward(Proto.UDP, "127.0.0.1", 18081, 81)


def test_commands() -> None:
    f = Forward(Proto.UDP, "0.0.0.0", 5353, 5353)
    assert add_command("net0", f, "10.0.2.15") == "hostfwd_add net0 udp:0.0.0.0:5353-10.0.2.15:5353"
    assert remove_command("net0", f) == "hostfwd_remove net0 udp:0.0.0.0:5353"


def test_replies() -> None:
    assert not add_failed("")
    assert add_failed("Could not set up host forwarding rule 'tcp:127.0.0.1:80-10.0.2.15:80'\r\n")
    assert not remove_failed("host forwarding rule for tcp:127.0.0.1:18080 removed\r\n")
    assert remove_failed("host forwarding rule for tcp:127.0.0.1:18080 not found\r\n")
