"""Firewall rules for pydesk's networks: the whole rule set as a pure function of the state.

What it is for: ``render_iptables(ruleset)`` turns the networks (bridge, subnet, internal) and
the published ports into the content of pydesk's own chains, as ``iptables-restore --noflush``
input. Declaring a chain in that input empties it, so applying the rendering replaces every
pydesk rule at once, atomically: rules of an endpoint that is gone cannot linger, and a daemon
restart rebuilds exactly what the stored state says. The chains (all named ``<prefix>-...``,
the prefix starting with ``PYDESK``):

- filter ``-FWD`` (jumped to from FORWARD): ``-ISO1``/``-ISO2`` drop traffic between two
  pydesk bridges; per bridge, replies and published ports (``-PORTS``, only connections the
  kernel DNATed: a LAN host routing to a container address directly is not let in) may come
  in, anything may go out (no way out off an ``--internal`` bridge), and the rest coming in
  is dropped.
- filter ``-IN`` (from INPUT): the embedded resolver's port is reachable from its own bridge
  only (it must not be an open forwarder for the LAN).
- raw ``-RAW`` (from raw PREROUTING, before conntrack and DNAT): packets for 127.0.0.0/8 off
  a pydesk bridge, and packets for a port published on a loopback address coming in on
  anything but ``lo``, are dropped. ``route_localnet`` is on for each bridge (for ``curl
  127.0.0.1:PORT``), which would otherwise let a container -- or, through the DNAT, a LAN
  host -- reach the host's loopback-only services (the CVE-2020-8558 class).
- nat ``-DNAT`` (from PREROUTING and OUTPUT, for local destinations): the resolver's
  ``<gateway>:53`` redirected to its real port for traffic off its bridge, and published
  ports.
- nat ``-SNAT`` (from POSTROUTING): masquerade of each non-internal subnet going elsewhere,
  of 127.0.0.0/8 sources going to a bridge (``curl 127.0.0.1:PORT``, with route_localnet), and
  hairpin (a container reaching its own published port).

When pydesk turned ``ip_forward`` on itself, ``Ruleset.forward_drop`` asks the backend to
make the FORWARD policy DROP (as Docker does): the host must not become a router between its
LAN and a VPN because containers needed forwarding. pydesk's own chain accepts every flow of
its own explicitly, so that policy never drops a container's traffic.

What it must never do: touch a chain that is not pydesk's (only the jumps into its own, and
the FORWARD policy when ``forward_drop`` says pydesk enabled forwarding).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class BridgeRule:
    bridge: str
    subnet: str
    internal: bool = False
    gateway: str = ""       # the bridge's own address (the embedded resolver's)
    dns_port: int = 0       # where the resolver listens on the gateway; 0: no resolver


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
    forward_drop: bool = False   # pydesk turned ip_forward on: FORWARD policy DROP

    def chain(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"


FILTER_CHAINS = ("FWD", "ISO1", "ISO2", "PORTS", "IN")
NAT_CHAINS = ("DNAT", "SNAT")
RAW_CHAINS = ("RAW",)
CHAINS = (("filter", FILTER_CHAINS), ("nat", NAT_CHAINS), ("raw", RAW_CHAINS))
DNS_PROTOS = ("udp", "tcp")


def jumps(prefix: str) -> list[tuple[str, str, list[str]]]:
    """(table, builtin chain, rule) of the jumps into pydesk's chains."""
    return [
        ("filter", "FORWARD", ["-j", f"{prefix}-FWD"]),
        ("filter", "INPUT", ["-j", f"{prefix}-IN"]),
        ("raw", "PREROUTING", ["-j", f"{prefix}-RAW"]),
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


def _loopback(host_ip: str) -> bool:
    try:
        return ipaddress.ip_address(host_ip).is_loopback
    except ValueError:
        return False


def resolvers(rs: Ruleset) -> list[BridgeRule]:
    """Bridges whose gateway runs the embedded resolver on a port of its own."""
    return [b for b in rs.bridges if b.dns_port and b.gateway]


def raw_rules(rs: Ruleset) -> list[str]:
    raw = rs.chain("RAW")
    out = [f"-A {raw} -d 127.0.0.0/8 -i {b.bridge} -j DROP" for b in rs.bridges]
    out += [f"-A {raw} -d {p.host_ip}/32 ! -i lo -p {p.proto} -m {p.proto} "
            f"--dport {p.host_port} -j DROP" for p in kernel_ports(rs) if _loopback(p.host_ip)]
    return out


def input_rules(rs: Ruleset) -> list[str]:
    chain = rs.chain("IN")
    out: list[str] = []
    for b in resolvers(rs):
        for proto in DNS_PROTOS:
            match = f"-d {b.gateway}/32 -p {proto} -m {proto} --dport {b.dns_port}"
            out += [f"-A {chain} {match} -i {b.bridge} -j ACCEPT",
                    f"-A {chain} {match} -j DROP"]
    return out


def filter_rules(rs: Ruleset) -> list[str]:
    fwd, iso1, iso2, ports, _ = (rs.chain(s) for s in FILTER_CHAINS)
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
                   f"-p {p.proto} -m {p.proto} --dport {p.container_port} "
                   f"-m conntrack --ctstate DNAT -j ACCEPT")
    return out + input_rules(rs)


def kernel_ports(rs: Ruleset) -> list[PortRule]:
    """Ports the kernel path serves: IPv4 bindings on non-internal bridges (the userland
    proxy serves the rest, e.g. ::1)."""
    internal = {b.bridge for b in rs.bridges if b.internal}
    return [p for p in rs.ports
            if p.bridge not in internal and (p.host_ip in ("", "0.0.0.0") or _ipv4(p.host_ip))]


def nat_rules(rs: Ruleset) -> list[str]:
    dnat, snat = (rs.chain(s) for s in NAT_CHAINS)
    out: list[str] = []
    for b in resolvers(rs):
        for proto in DNS_PROTOS:
            out.append(f"-A {dnat} -d {b.gateway}/32 -i {b.bridge} -p {proto} -m {proto} "
                       f"--dport 53 -j DNAT --to-destination {b.gateway}:{b.dns_port}")
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
    lines += ["COMMIT", "*raw"]
    lines += [f":{rs.chain(s)} - [0:0]" for s in RAW_CHAINS]
    lines += raw_rules(rs)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_empty(prefix: str) -> str:
    """Input that empties every pydesk chain (before the jumps and chains are deleted)."""
    return render_iptables(Ruleset(prefix))
