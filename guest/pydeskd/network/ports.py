"""Published ports: what a container asks for (``-p``, ``-P``, EXPOSE) and how it is shown.

What it is for: ``requested(host_config, config)`` reads HostConfig.PortBindings (the CLI's
``-p host:container/proto``, ``-p ip:host:container``, ``-p container``: an empty HostPort,
``-p 8000-8010:80``: a range) and, with PublishAllPorts (``-P``), every ExposedPorts entry
(the image's EXPOSE included: the container service merged them) into ``Wanted`` bindings;
``pick_port`` chooses a host port from a range (or Docker's ephemeral range 32768-60999);
``inspect_ports`` and ``summary_ports`` render ``NetworkSettings.Ports`` (what ``docker port``
reads) and the ``Ports`` of ``docker ps``. Pure.

What it must never do: bind sockets (the port proxy holds the ports).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.network.model import PortMapping

EPHEMERAL = (32768, 60999)


@dataclass(frozen=True)
class Wanted:
    proto: str
    container_port: int
    host_ip: str              # "" for every address
    low: int                  # 0: any free port
    high: int


def parse_port_key(key: str) -> tuple[int, str]:
    """``"80/tcp"`` -> (80, "tcp"); a bare ``"80"`` is tcp. Raises InvalidArgument."""
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    if proto == "sctp":
        raise InvalidArgument("sctp ports are not supported by pydesk")
    number = _port(port, key)
    return number, proto


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(f"invalid port specification: \"{whole}\"")
    return int(text)


def _host_range(text: str) -> tuple[int, int]:
    if not text:
        return 0, 0
    low, sep, high = text.partition("-")
    first = _port(low, text)
    last = _port(high, text) if sep else first
    if last < first:
        raise InvalidArgument(f"invalid port range: {text}")
    return first, last


def requested(host_config: Mapping[str, Any], config: Mapping[str, Any]) -> list[Wanted]:
    """Every binding the container asks for, in a stable order. Raises InvalidArgument."""
    out: list[Wanted] = []
    seen: set[str] = set()
    bindings = host_config.get("PortBindings") or {}
    if not isinstance(bindings, Mapping):
        raise InvalidArgument("PortBindings must be an object")
    for key in sorted(bindings, key=_sort_key):
        port, proto = parse_port_key(key)
        seen.add(f"{port}/{proto}")
        for given in bindings[key] or [{}]:
            binding = given or {}
            low, high = _host_range(str(binding.get("HostPort") or ""))
            out.append(Wanted(proto, port, parse_host_ip(binding.get("HostIp")), low, high))
    if host_config.get("PublishAllPorts"):
        for key in sorted(config.get("ExposedPorts") or {}, key=_sort_key):
            port, proto = parse_port_key(key)
            if f"{port}/{proto}" not in seen:
                out.append(Wanted(proto, port, "", 0, 0))
    return out


def parse_host_ip(value: Any) -> str:
    """A binding's HostIp in its canonical text ("" for every address). Raises
    InvalidArgument ("invalid IP address: X", go-connections' wording) for anything that is
    not a plain IPv4 or IPv6 address: the text names pid files, so it must be an address."""
    import ipaddress

    text = str(value or "").strip()
    if not text:
        return ""
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise InvalidArgument(f"invalid IP address: {text}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise InvalidArgument(f"invalid IP address: {text}: zones are not supported")
    return str(address)


def shown_host_ip(host_ip: str) -> str:
    """What inspect and ``docker ps`` show for a binding: every address is 0.0.0.0."""
    return host_ip or "0.0.0.0"


def _sort_key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    return (int(port) if port.isdigit() else 0, proto)


def candidates(wanted: Wanted, taken: Container[tuple[str, int]],
               rand: Callable[[int, int], int] = random.randint) -> Iterable[int]:
    """Host ports to try for ``wanted``, in order: its own (or its range, in order) or, for
    an ephemeral one, the range from a random start (wrapping), skipping ports this daemon
    has already given out for the protocol."""
    if wanted.low:
        ports: Sequence[int] = range(wanted.low, wanted.high + 1)
    else:
        low, high = EPHEMERAL
        start = rand(low, high)
        ports = [*range(start, high + 1), *range(low, start)]
    return (p for p in ports if (wanted.proto, p) not in taken)


def inspect_ports(exposed: Iterable[str], mappings: Sequence[PortMapping]
                  ) -> dict[str, list[dict[str, str]] | None]:
    """``NetworkSettings.Ports``: every exposed or published port, with its host bindings
    (None for one that is only exposed)."""
    out: dict[str, list[dict[str, str]] | None] = {}
    for key in exposed:
        port, proto = parse_port_key(key)
        out.setdefault(f"{port}/{proto}", None)
    for m in mappings:
        listed = out.get(m.key) or []
        listed.append({"HostIp": shown_host_ip(m.host_ip), "HostPort": str(m.host_port)})
        out[m.key] = listed
    return out


def summary_ports(exposed: Iterable[str], mappings: Sequence[PortMapping]
                  ) -> list[dict[str, Any]]:
    """``Ports`` of ``GET /containers/json`` (the PORTS column of ``docker ps``)."""
    out: list[dict[str, Any]] = []
    published = {m.key for m in mappings}
    for m in mappings:
        out.append({"IP": shown_host_ip(m.host_ip), "PrivatePort": m.container_port,
                    "PublicPort": m.host_port, "Type": m.proto})
    for key in exposed:
        port, proto = parse_port_key(key)
        if f"{port}/{proto}" not in published:
            out.append({"PrivatePort": port, "Type": proto})
    return out
