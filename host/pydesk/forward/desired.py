"""The forwards the host should have, as a pure function of the guest's containers.

What it is for: :func:`container_forwards` reads one ``GET /containers/{id}/json`` answer and
says which host sockets must exist for it: one :class:`Forward` per published port that the guest
actually bound (``NetworkSettings.Ports``, so ``-P`` and ephemeral ports are included), on the
host address the user asked for. That address comes from the label
:data:`HOST_PORT_BINDINGS_LABEL`, which the API proxy writes with the user's original
``HostConfig.PortBindings`` (the proxy rewrites the bindings the guest sees, so the guest's own
``HostIp`` says nothing about the host). The label is trusted per port only where it agrees with
the container's real ``HostConfig.PortBindings`` (what the proxy sent the guest for it): an
image's label, or a create that did not go through the proxy, never widens ``-P`` or a port the
container did not bind that way.
What it must never do: perform I/O, or widen an address: an empty or absent ``HostIp`` means
127.0.0.1 on the host (Docker Desktop's safe default), never every interface unless asked; a
label it cannot trust means 127.0.0.1 too.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Container label: JSON of the ``HostConfig.PortBindings`` the user sent to the host socket,
# written by the API proxy, which names it.
from pydesk.proxy.labels import HOST_PORT_BINDINGS_LABEL, guest_port_bindings

DEFAULT_HOST_IP = "127.0.0.1"
ALL_IPV4 = "0.0.0.0"
__all__ = ["HOST_PORT_BINDINGS_LABEL", "ContainerForwards", "Forward", "Proto",
           "container_forwards", "desired_forwards", "trusted_bindings"]


class Proto(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class Forward:
    """One host socket forwarded to one guest port. Equality and hashing use the rule only
    (what QEMU knows); ``container`` and ``container_port`` are for messages."""

    proto: Proto
    host_ip: str
    host_port: int
    guest_port: int
    container: str = field(default="", compare=False)
    container_port: str = field(default="", compare=False)
    """``80/tcp``: the port inside the container."""

    def describe(self) -> str:
        """``127.0.0.1:8080 -> 80/tcp (web)``."""
        target = self.container_port or f"{self.guest_port}/{self.proto}"
        who = f" ({self.container})" if self.container else ""
        return f"{self.host_ip}:{self.host_port} -> {target}{who}"

    def to_json(self) -> dict[str, Any]:
        return {"proto": str(self.proto), "host_ip": self.host_ip, "host_port": self.host_port,
                "guest_port": self.guest_port, "container": self.container,
                "container_port": self.container_port}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Forward:
        return cls(Proto(data["proto"]), str(data["host_ip"]), int(data["host_port"]),
                   int(data["guest_port"]), str(data.get("container", "")),
                   str(data.get("container_port", "")))


@dataclass(frozen=True)
class ContainerForwards:
    """What one container needs: its forwards, and warnings about bindings that cannot be
    forwarded (said once to the user, not an error of the container)."""

    forwards: frozenset[Forward] = frozenset()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _UserBinding:
    host_ip: str | None   # None: the user gave no address
    low: int | None       # None: an ephemeral port
    high: int | None

    def matches(self, port: int) -> bool:
        return self.low is not None and self.high is not None and self.low <= port <= self.high


def container_name(inspect: Mapping[str, Any]) -> str:
    name = str(inspect.get("Name") or "").lstrip("/")
    return name or str(inspect.get("Id") or "")[:12]


def container_forwards(inspect: Mapping[str, Any]) -> ContainerForwards:
    """The forwards of one container (an ``/containers/{id}/json`` answer); none unless it
    runs (a paused container keeps its ports)."""
    state = inspect.get("State") or {}
    if not state.get("Running"):
        return ContainerForwards()
    name = container_name(inspect)
    ports = (inspect.get("NetworkSettings") or {}).get("Ports") or {}
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    user, distrusted = trusted_bindings(labels.get(HOST_PORT_BINDINGS_LABEL),
                                        (inspect.get("HostConfig") or {}).get("PortBindings"))
    forwards: set[Forward] = set()
    warnings = [f"container {name}'s {key} is forwarded on {DEFAULT_HOST_IP} only: its "
                f"{HOST_PORT_BINDINGS_LABEL} label does not match the container's port "
                "bindings (an image's label, or a create that bypassed pydesk's API socket)"
                for key in distrusted if key in ports and _guest_ports(ports[key])]
    for key in sorted(ports):
        guest_ports = _guest_ports(ports[key])
        proto = _proto(key)
        if not guest_ports:
            continue  # exposed, not published
        if proto is None:
            warnings.append(f"container {name}'s {key} is not forwarded: QEMU's user-mode "
                            "networking forwards TCP and UDP only")
            continue
        for guest_port, host_ip in _pair(guest_ports, user.get(key)):
            problem = _unforwardable(host_ip)
            if problem:
                warnings.append(f"container {name}'s {key} is not forwarded to {host_ip} "
                                f"port {guest_port}: {problem}")
                continue
            forwards.add(Forward(proto, host_ip, guest_port, guest_port, name, key))
    return ContainerForwards(frozenset(forwards), tuple(warnings))


def desired_forwards(containers: Iterable[ContainerForwards]) -> frozenset[Forward]:
    out: set[Forward] = set()
    for c in containers:
        out |= c.forwards
    return frozenset(out)


def trusted_bindings(label: object, port_bindings: object
                     ) -> tuple[dict[str, list[_UserBinding]], tuple[str, ...]]:
    """The label's bindings per port key for the ports where it agrees with the container's
    ``HostConfig.PortBindings`` (the guest's bindings are exactly what the proxy derives from
    the label: :func:`guest_port_bindings`), and the keys whose label entries widen an address
    but do not agree (sorted; they get 127.0.0.1)."""
    raw = _label_json(label)
    actual = _normalized(port_bindings if isinstance(port_bindings, dict) else {})
    expected = _normalized(guest_port_bindings(raw))
    user = user_bindings(label)
    distrusted = sorted(key for key in user
                        if key not in actual or expected.get(key) != actual[key])
    widening = [key for key in distrusted
                if any(host_address(b.host_ip) != DEFAULT_HOST_IP for b in user[key])]
    return ({k: v for k, v in user.items() if k not in distrusted}, tuple(widening))


def _normalized(bindings: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Port key (``80`` -> ``80/tcp``) -> ``(HostIp, HostPort)`` per binding; a binding that is
    not an object counts as an empty one."""
    out: dict[str, list[tuple[str, str]]] = {}
    for port_key, entries in bindings.items():
        key = _key(str(port_key))
        for b in entries if isinstance(entries, list) else []:
            pair = ((str(b.get("HostIp") or ""), str(b.get("HostPort") or ""))
                    if isinstance(b, dict) else ("", ""))
            out.setdefault(key, []).append(pair)
    return out


def _label_json(label: object) -> dict[str, Any]:
    if not isinstance(label, str) or not label:
        return {}
    try:
        data = json.loads(label)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _key(port_key: str) -> str:
    return port_key if "/" in port_key else f"{port_key}/tcp"


def user_bindings(label: object) -> dict[str, list[_UserBinding]]:
    """The label's JSON (``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``) -> bindings per
    port key; an unreadable label counts as absent (127.0.0.1 everywhere). Not checked against
    the container: :func:`trusted_bindings` does that."""
    out: dict[str, list[_UserBinding]] = {}
    for port_key, bindings in _label_json(label).items():
        if not isinstance(bindings, list):
            continue
        for b in bindings:
            if isinstance(b, dict):
                out.setdefault(_key(port_key), []).append(_user_binding(b))
    return out


def _user_binding(b: Mapping[str, Any]) -> _UserBinding:
    ip = b.get("HostIp")
    host_ip = str(ip) if ip else None
    port = str(b.get("HostPort") or "")
    low, _, high = port.partition("-")
    try:
        lo = int(low) if low else None
        hi = int(high) if high else lo
    except ValueError:
        lo = hi = None
    if lo == 0:  # "0" asks for an ephemeral port, like ""
        lo = hi = None
    return _UserBinding(host_ip, lo, hi)


def _pair(guest_ports: list[int], user: list[_UserBinding] | None) -> list[tuple[int, str]]:
    """(guest port, host address) for every guest binding. A user binding with a port (or a
    range) matches the guest ports it covers; ephemeral ones take the remaining guest ports
    in order (the proxy sends them to the guest in the same order)."""
    if not user:
        return [(port, DEFAULT_HOST_IP) for port in guest_ports]
    pairs: list[tuple[int, str]] = []
    unmatched: list[int] = []
    for port in guest_ports:
        explicit = [u for u in user if u.matches(port)]
        if explicit:
            pairs += [(port, host_address(u.host_ip)) for u in explicit]
        else:
            unmatched.append(port)
    ephemeral = [u for u in user if u.low is None]
    for i, port in enumerate(unmatched):
        ip = ephemeral[i].host_ip if i < len(ephemeral) else None
        pairs.append((port, host_address(ip)))
    return list(dict.fromkeys(pairs))


def host_address(user_ip: str | None) -> str:
    """The host address for a user's ``HostIp``: none -> 127.0.0.1, anything else as given."""
    return user_ip.strip("[]") if user_ip else DEFAULT_HOST_IP


def _unforwardable(host_ip: str) -> str:
    try:
        address = ipaddress.ip_address(host_ip)
    except ValueError:
        return "not an IP address"
    if address.version == 6:
        return "QEMU's user-mode networking forwards IPv4 host addresses only"
    return ""


def _guest_ports(bindings: object) -> list[int]:
    """The distinct host ports the guest bound for one container port (dockerd lists 0.0.0.0
    and :: separately with the same port)."""
    if not isinstance(bindings, list):
        return []
    ports: list[int] = []
    for b in bindings:
        try:
            port = int(b.get("HostPort") or 0) if isinstance(b, dict) else 0
        except ValueError:
            port = 0
        if port and port not in ports:
            ports.append(port)
    return ports


def _proto(key: str) -> Proto | None:
    _, _, proto = key.partition("/")
    try:
        return Proto(proto or "tcp")
    except ValueError:
        return None  # sctp
