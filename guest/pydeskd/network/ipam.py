"""IPAM: subnets for new networks and addresses for endpoints, as pure functions.

What it is for: choosing a subnet from Docker's default pools (172.17.0.0/16 .. 172.31.0.0/16,
then 192.168.0.0/20 .. 192.168.240.0/20) that clashes neither with another pydesk network nor
with a route the host already has (a running docker0, a VPN...); checking what the user gave
(``--subnet``, ``--gateway``, ``--ip-range``) with Docker's messages; and picking the next
free address of a pool given the addresses in use. The set in use is always computed from the
stored endpoints by the caller, so an address can be neither handed out twice nor lost across a
crash.

What it must never do: read the host or the disk (routes come in as a parameter).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network

from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument
from pydeskd.network.model import Pool


class PoolsExhausted(FailedPrecondition):
    pass


class AddressesExhausted(FailedPrecondition):
    pass


def default_pools() -> list[IPv4Network]:
    """Docker's local default address pools, in its order."""
    pools = [IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)]
    pools += list(IPv4Network("192.168.0.0/16").subnets(new_prefix=20))
    return pools


def parse_subnet(text: str) -> IPv4Network:
    """A ``--subnet``: "10.1.0.0/16" (host bits must be zero, as Go's ParseCIDR + check)."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid CIDR address: {text}") from None
    if "/" not in text:
        raise InvalidArgument(f"invalid CIDR address: {text}")
    if not isinstance(net, IPv4Network):
        raise InvalidArgument(f"IPv6 subnets are not supported by pydesk: {text}")
    if net.prefixlen > 30:
        raise InvalidArgument(f"invalid subnet {text}: it leaves no room for hosts")
    return net


def parse_address(text: str, what: str = "IP address") -> IPv4Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {text}") from None
    if not isinstance(addr, IPv4Address):
        raise InvalidArgument(f"IPv6 addresses are not supported by pydesk: {text}")
    return addr


def overlaps(net: IPv4Network, others: Iterable[IPv4Network]) -> bool:
    return any(net.overlaps(other) for other in others)


def choose_subnet(taken: Sequence[IPv4Network], host_routes: Sequence[IPv4Network],
                  pools: Sequence[IPv4Network] | None = None) -> IPv4Network:
    """The first default pool free of pydesk's networks and of the host's routes (a default
    route, 0.0.0.0/0, clashes with nothing). Raises PoolsExhausted with Docker's message."""
    routes = [r for r in host_routes if r.prefixlen > 0]
    for candidate in pools if pools is not None else default_pools():
        if not overlaps(candidate, taken) and not overlaps(candidate, routes):
            return candidate
    raise PoolsExhausted("could not find an available, non-overlapping IPv4 address pool "
                         "among the defaults to assign to the network")


def make_pool(subnet: str, gateway: str = "", ip_range: str = "",
              aux: dict[str, str] | None = None) -> Pool:
    """Checks one IPAM.Config entry (Docker's messages) and fills the gateway (the first host
    address) when not given. Raises InvalidArgument."""
    net = parse_subnet(subnet)
    if ip_range:
        rng = parse_subnet(ip_range)
        if not rng.subnet_of(net):
            raise InvalidArgument(f"no matching subnet for range {ip_range}")
    if gateway:
        gw = parse_address(gateway, "gateway address")
        if gw not in net:
            raise InvalidArgument(f"no matching subnet for gateway {gateway}")
        if gw in (net.network_address, net.broadcast_address):
            raise InvalidArgument(f"invalid gateway {gateway}: it is the subnet's network "
                                  f"or broadcast address")
    else:
        gw = net.network_address + 1
    for name, addr in (aux or {}).items():
        if parse_address(addr, "auxiliary address") not in net:
            raise InvalidArgument(f"no matching subnet for aux-address {name}={addr}")
    return Pool(str(net), str(gw), str(parse_subnet(ip_range)) if ip_range else "",
                dict(aux or {}))


def reserved(pool: Pool) -> set[IPv4Address]:
    """Addresses never given to an endpoint: network, broadcast, gateway, aux addresses."""
    net = IPv4Network(pool.subnet)
    out = {net.network_address, net.broadcast_address, IPv4Address(pool.gateway)}
    out |= {IPv4Address(a) for a in pool.aux.values()}
    return out


def allocate(pool: Pool, in_use: Iterable[str], wanted: str = "") -> IPv4Address:
    """``wanted`` (a static ``--ip``) if free, else the lowest free address of the pool's
    range. Raises InvalidArgument (outside the subnet), FailedPrecondition (taken),
    AddressesExhausted."""
    net = IPv4Network(pool.subnet)
    used = {IPv4Address(a) for a in in_use} | reserved(pool)
    if wanted:
        addr = parse_address(wanted)
        if addr not in net:
            raise InvalidArgument(f"invalid address {wanted}: it does not belong to any of "
                                  f"this network's subnets")
        if addr in used:
            raise FailedPrecondition("Address already in use")
        return addr
    rng = IPv4Network(pool.ip_range) if pool.ip_range else net
    for addr in rng.hosts() if rng.prefixlen < 31 else rng:
        if addr not in used and addr in net:
            return addr
    raise AddressesExhausted("no available addresses on this pool")


def mac_for(address: str) -> str:
    """Docker's MAC for an address: 02:42 followed by the four address bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in IPv4Address(address).packed)
