"""Firewall rules for pydesk's networks: the whole rule set as a pure function of the state.

What it is for: ``render_iptables(ruleset)`` turns the networks (bridge, subnet, internal) and
the published ports into the content of pydesk's own chains, as ``iptables-restore --noflush``
input. Declaring a chain in that input empties it, so applying the rendering replaces every
pydesk rule at once, atomically: rules of an endpoint that is gone cannot linger, and a daemon
restart rebuilds exactly what the stored state says. The chains (all named ``<prefix>-...``,
the prefix starting with ``PYDESK``):

- filter ``-FWD`` (jumped to from FORWARD): ``-ISO1``/``-ISO2`` drop traffic between two
  pydesk bridges; per bridge, replies and published ports (``-PORTS``) may come in, anything
  may go out (no way out off an ``--internal`` bridge), and the rest coming in is dropped.
- nat ``-DNAT`` (from PREROUTING and OUTPUT, for local destinations): published ports.
- nat ``-SNAT`` (from POSTROUTING): masquerade of each non-internal subnet going elsewhere,
  of 127.0.0.0/8 sources going to a bridge (``curl 127.0.0.1:PORT``, with route_localnet), and
  hairpin (a container reaching its own published port).

What it must never do: touch a chain that is not pydesk's (only the four jumps into its own).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class BridgeRule:
    bridge: str
    subnet: str
    internal: bool = False


@dataclass(frozen=True)
class PortRule:
    proto: str
    host_ip: str            # "0.0.0.0": every local address
    host_port: int
    container_ip: str
    container_port: int
    bridge: str


@dataclass(frozen=True)
class Ruleset:
    prefix: str
    bridges: tuple[BridgeRule, ...] = ()
    ports: tuple[PortRule, ...] = ()

    def chain(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"


FILTER_CHAINS = ("FWD", "ISO1", "ISO2", "PORTS")
NAT_CHAINS = ("DNAT", "SNAT")


def jumps(prefix: str) -> list[tuple[str, str, list[str]]]:
    """(table, builtin chain, rule) of the jumps into pydesk's chains."""
    return [
        ("filter", "FORWARD", ["-j", f"{prefix}-FWD"]),
        ("nat", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", f"{prefix}-DNAT"]),
        ("nat", "OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", f"{prefix}-DNAT"]),
        ("nat", "POSTROUTING", ["-j", f"{prefix}-SNAT"]),
    ]


def _ipv4(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address)
    except ValueError:
        return False


def _dnat_dest(host_ip: str) -> list[str]:
    if host_ip in ("", "0.0.0.0"):
        return []
    return ["-d", f"{host_ip}/32"]


def filter_rules(rs: Ruleset) -> list[str]:
    fwd, iso1, iso2, ports = (rs.chain(s) for s in FILTER_CHAINS)
    out = [f"-A {fwd} -j {iso1}"]
    for b in rs.bridges:
        out.append(f"-A {iso1} -i {b.bridge} ! -o {b.bridge} -j {iso2}")
        out.append(f"-A {iso2} -o {b.bridge} -j DROP")
        if b.internal:
            out += [f"-A {fwd} -i {b.bridge} ! -o {b.bridge} -j DROP",
                    f"-A {fwd} ! -i {b.bridge} -o {b.bridge} -j DROP",
                    f"-A {fwd} -i {b.bridge} -o {b.bridge} -j ACCEPT"]
        else:
            out += [f"-A {fwd} -o {b.bridge} -m conntrack --ctstate RELATED,ESTABLISHED "
                    f"-j ACCEPT",
                    f"-A {fwd} -o {b.bridge} -j {ports}",
                    f"-A {fwd} -i {b.bridge} ! -o {b.bridge} -j ACCEPT",
                    f"-A {fwd} -i {b.bridge} -o {b.bridge} -j ACCEPT",
                    f"-A {fwd} -o {b.bridge} -j DROP"]
    for p in kernel_ports(rs):
        out.append(f"-A {ports} -d {p.container_ip}/32 ! -i {p.bridge} -o {p.bridge} "
                   f"-p {p.proto} -m {p.proto} --dport {p.container_port} -j ACCEPT")
    return out


def kernel_ports(rs: Ruleset) -> list[PortRule]:
    """Ports the kernel path serves: IPv4 bindings on non-internal bridges (the userland
    proxy serves the rest, e.g. ::1)."""
    internal = {b.bridge for b in rs.bridges if b.internal}
    return [p for p in rs.ports
            if p.bridge not in internal and (p.host_ip in ("", "0.0.0.0") or _ipv4(p.host_ip))]


def nat_rules(rs: Ruleset) -> list[str]:
    dnat, snat = (rs.chain(s) for s in NAT_CHAINS)
    out: list[str] = []
    for b in rs.bridges:
        if not b.internal:
            out.append(f"-A {snat} -s {b.subnet} ! -o {b.bridge} -j MASQUERADE")
            out.append(f"-A {snat} -s 127.0.0.0/8 -o {b.bridge} -j MASQUERADE")
    for p in kernel_ports(rs):
        dest = " ".join(_dnat_dest(p.host_ip))
        dest = f" {dest}" if dest else ""
        out.append(f"-A {dnat}{dest} -p {p.proto} -m {p.proto} --dport {p.host_port} "
                   f"-j DNAT --to-destination {p.container_ip}:{p.container_port}")
        out.append(f"-A {snat} -s {p.container_ip}/32 -d {p.container_ip}/32 -p {p.proto} "
                   f"-m {p.proto} --dport {p.container_port} -j MASQUERADE")
    return out


def render_iptables(rs: Ruleset) -> str:
    """``iptables-restore --noflush`` input that replaces every pydesk chain's content."""
    lines = ["*filter"]
    lines += [f":{rs.chain(s)} - [0:0]" for s in FILTER_CHAINS]
    lines += filter_rules(rs)
    lines += ["COMMIT", "*nat"]
    lines += [f":{rs.chain(s)} - [0:0]" for s in NAT_CHAINS]
    lines += nat_rules(rs)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_empty(prefix: str) -> str:
    """Input that empties every pydesk chain (before the jumps and chains are deleted)."""
    return render_iptables(Ruleset(prefix))
