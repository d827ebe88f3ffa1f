"""QEMU's user-mode networking, as text: ``hostfwd`` rules to send, ``info usernet`` to read.

What it is for: the human monitor commands that QMP's ``human-monitor-command`` carries
(``hostfwd_add NETDEV tcp:HOSTIP:HOSTPORT-GUESTADDR:GUESTPORT``, ``hostfwd_remove NETDEV
tcp:HOSTIP:HOSTPORT``) and the parsing of their answers, as pure functions.
What it must never do: talk to QEMU (that is :mod:`pydesk.forward.backend`'s job).

``info usernet`` (QEMU 7.2) prints, per user-mode netdev::

    Hub -1 (net0):
      Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
      TCP[HOST_FORWARD]  13       127.0.0.1 18080       10.0.2.15    80     0     0
      TCP[HOST_FORWARD]  15               * 18082       10.0.2.15    80     0     0

``*`` is a rule bound to every address (0.0.0.0). Rows in other states are live connections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydesk.forward.desired import ALL_IPV4, Forward, Proto

_SECTION = re.compile(r"^\S.*\((?P<netdev>[^)]+)\):\s*$")
_ROW = re.compile(r"^\s*(?P<proto>TCP|UDP)\[HOST_FORWARD\]\s+(?P<fd>-?\d+)\s+(?P<src>\S+)\s+"
                  r"(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)")


@dataclass(frozen=True)
class HostForwardRule:
    """One ``HOST_FORWARD`` row of ``info usernet``."""

    proto: Proto
    host_ip: str
    host_port: int
    guest_address: str
    guest_port: int

    def forward(self) -> Forward:
        return Forward(self.proto, self.host_ip, self.host_port, self.guest_port)


def parse_usernet(text: str, netdev_id: str) -> list[HostForwardRule]:
    """The host forwarding rules of ``netdev_id`` in an ``info usernet`` answer."""
    rules: list[HostForwardRule] = []
    section: str | None = None
    for line in text.splitlines():
        head = _SECTION.match(line)
        if head:
            section = head.group("netdev")
            continue
        row = _ROW.match(line)
        if row is None or section != netdev_id:
            continue
        src = row.group("src")
        rules.append(HostForwardRule(
            Proto(row.group("proto").lower()), ALL_IPV4 if src == "*" else src,
            int(row.group("sport")), row.group("dst"), int(row.group("dport"))))
    return rules


def add_command(netdev_id: str, forward: Forward, guest_address: str) -> str:
    return (f"hostfwd_add {netdev_id} {forward.proto}:{forward.host_ip}:{forward.host_port}"
            f"-{guest_address}:{forward.guest_port}")


def remove_command(netdev_id: str, forward: Forward) -> str:
    return f"hostfwd_remove {netdev_id} {forward.proto}:{forward.host_ip}:{forward.host_port}"


def add_failed(reply: str) -> bool:
    """hostfwd_add prints nothing when it worked, a sentence when it did not."""
    return bool(reply.strip())


def remove_failed(reply: str) -> bool:
    """``host forwarding rule for ... removed`` when it worked (``not found`` otherwise)."""
    return "removed" not in reply
