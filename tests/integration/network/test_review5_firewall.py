"""Issue 5's review, the firewall half, against the kernel (root): a bridge with a
"container" namespace, an "outside" namespace behind the host (a LAN host), and pydesk's
rules under a prefix of their own, for both backends. Every check sends UDP datagrams (one
way: no reply path to get wrong) and looks at what a receiver got; each blocking rule is
also shown to be what blocks (the chain emptied, the datagram arrives).

- #2: a port published on 127.0.0.1 is not reachable from a LAN host sending to 127.0.0.1.
- #3: a container cannot reach the host's loopback-only services through the gateway.
- #8: a LAN host routing to a container address directly does not get in (published-port
  accepts are for the kernel's DNAT only), while the published port works.
- #9: the resolver's <gateway>:53 is redirected to its own port for the bridge, and that
  port is not reachable from the LAN.
- #17: a removed jump is seen (intact) and put back by the next apply.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from pydeskd.network.firewall import BridgeRule, PortRule, Ruleset
from pydeskd.network.iptables import IptablesFirewall, run
from pydeskd.network.netlink import PyrouteLinks
from pydeskd.network.netns import BindMountedNamespaces
from pydeskd.network.nft import NftFirewall, table_name
from pydeskd.network.sysctl import ProcSysctls, route_localnet_key
from tests.integration.network.conftest import free_port, free_subnet

pytestmark = pytest.mark.integration

Backend = IptablesFirewall | NftFirewall


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True)


def _in(netns: Path, *argv: str) -> list[str]:
    return ["nsenter", f"--net={netns}", *argv]


RECEIVE = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
           "s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(float(sys.argv[3])); "
           "print('ready', flush=True)\n"
           "try: print(s.recvfrom(64)[0].decode())\nexcept OSError: print('none')")
SEND = ("import socket,sys,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(5):\n  try: s.sendto(b'hello', (sys.argv[1], int(sys.argv[2])))\n"
        "  except OSError: pass\n  time.sleep(0.1)")


def received(listen: tuple[Path | None, str, int], send_from: Path,
             dest: tuple[str, int]) -> bool:
    """Whether a datagram sent from the namespace ``send_from`` to ``dest`` reaches a
    receiver bound to (netns -- None: the host's --, address, port) ``listen``."""
    listen_in, listen_ip, port = listen
    dest_ip, dest_port = dest
    argv = [sys.executable, "-c", RECEIVE, listen_ip, str(port), "1.5"]
    receiver = subprocess.Popen(_in(listen_in, *argv) if listen_in else argv,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        _sh(*_in(send_from, sys.executable, "-c", SEND, dest_ip, str(dest_port)))
        out, _ = receiver.communicate(timeout=10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    return out.strip() == "hello"


@dataclass
class World:
    prefix: str
    bridge: str
    subnet: str
    gateway: str
    container: Path      # the container's netns
    container_ip: str
    outside: Path        # a LAN host's netns
    host_ip: str         # the host's address on the LAN link


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    tag = os.urandom(3).hex()
    links, spaces = PyrouteLinks(), BindMountedNamespaces()
    bridge, veth, lan = f"pdtr{tag}", f"pdtv{tag}", f"pdtl{tag}"
    net = IPv4Network(free_subnet())
    lan_net = IPv4Network(free_subnet())
    gateway, cip = str(net.network_address + 1), str(net.network_address + 2)
    host_ip, out_ip = str(lan_net.network_address + 1), str(lan_net.network_address + 2)
    container, outside = tmp_path / "c", tmp_path / "o"
    try:
        spaces.create(container)
        spaces.create(outside)
        links.ensure_bridge(bridge, gateway, net.prefixlen)
        ProcSysctls().write(route_localnet_key(bridge), "1")
        links.loopback_up(str(container))
        links.add_veth(veth, bridge, netns=str(container), ifname="eth0", address=cip,
                       prefixlen=net.prefixlen, mac="02:42:0a:00:00:02", gateway=gateway,
                       default_route=True)
        links.loopback_up(str(outside))
        _sh("ip", "link", "add", lan, "type", "veth", "peer", "name", "lan0")
        _sh("ip", "link", "set", "lan0", "netns", str(outside))
        _sh("ip", "addr", "add", f"{host_ip}/{lan_net.prefixlen}", "dev", lan)
        _sh("ip", "link", "set", lan, "up")
        _sh(*_in(outside, "ip", "addr", "add", f"{out_ip}/{lan_net.prefixlen}", "dev", "lan0"))
        _sh(*_in(outside, "ip", "link", "set", "lan0", "up"))
        # a LAN host with a route to the container subnet through this host
        _sh(*_in(outside, "ip", "route", "add", str(net), "via", host_ip))
        yield World(f"PYDESK-t{tag}", bridge, str(net), gateway, container, cip, outside,
                    host_ip)
    finally:
        with contextlib.suppress(Exception):
            links.delete_link(lan)
        with contextlib.suppress(Exception):
            links.delete_link(veth)
        with contextlib.suppress(Exception):
            links.delete_link(bridge)
        spaces.delete(container)
        spaces.delete(outside)


def _route_loopback_out(netns: Path, ifname: str, dest: str, via: str) -> None:
    """Makes the namespace send ``dest`` (a 127/8 address) out of ifname to ``via``, as an
    attacker on the link would craft it: the local table is consulted after a rule of ours."""
    _sh(*_in(netns, "ip", "rule", "add", "pref", "100", "lookup", "local"))
    _sh(*_in(netns, "ip", "rule", "del", "pref", "0"))
    _sh(*_in(netns, "ip", "rule", "add", "pref", "50", "to", f"{dest}/32", "lookup", "77"))
    _sh(*_in(netns, "ip", "route", "add", f"{dest}/32", "via", via, "dev", ifname,
             "table", "77"))
    _sh(*_in(netns, "sysctl", "-q", "-w", f"net.ipv4.conf.{ifname}.route_localnet=1"))


@contextlib.contextmanager
def applied(backend: Backend, rs: Ruleset) -> Iterator[None]:
    try:
        backend.apply(rs)
        yield
    finally:
        backend.teardown(rs.prefix)


def _empty_chain(backend: Backend, prefix: str, suffix: str, nft_chain: str) -> None:
    if isinstance(backend, IptablesFirewall):
        table = "raw" if suffix == "RAW" else "filter"
        run(["iptables", "-w", "-t", table, "-F", f"{prefix}-{suffix}"])
    else:
        run(["nft", "flush", "chain", "ip", table_name(prefix), nft_chain])


BACKENDS = [pytest.param(IptablesFirewall, id="iptables"), pytest.param(NftFirewall, id="nft")]


@pytest.mark.parametrize("kind", BACKENDS)
def test_loopback_published_port_is_not_reachable_from_the_lan(
        world: World, kind: type[Backend]) -> None:
    port, cport = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    rs = Ruleset(world.prefix, (BridgeRule(world.bridge, world.subnet, gateway=world.gateway),),
                 (PortRule("udp", "127.0.0.1", port, world.container_ip, cport,
                           world.bridge),))
    _route_loopback_out(world.outside, "lan0", "127.0.0.1", world.host_ip)
    backend = kind()
    with applied(backend, rs):
        assert not received((world.container, "0.0.0.0", cport), world.outside,
                            ("127.0.0.1", port))
        _empty_chain(backend, world.prefix, "RAW", "raw")       # the rule is what blocks
        assert received((world.container, "0.0.0.0", cport), world.outside,
                        ("127.0.0.1", port))


@pytest.mark.parametrize("kind", BACKENDS)
def test_container_cannot_reach_the_hosts_loopback(world: World, kind: type[Backend]) -> None:
    port = free_port(socket.SOCK_DGRAM)
    rs = Ruleset(world.prefix, (BridgeRule(world.bridge, world.subnet, gateway=world.gateway),))
    _route_loopback_out(world.container, "eth0", "127.0.0.77", world.gateway)
    backend = kind()
    with applied(backend, rs):
        assert not received((None, "127.0.0.77", port), world.container,
                            ("127.0.0.77", port))
        _empty_chain(backend, world.prefix, "RAW", "raw")
        assert received((None, "127.0.0.77", port), world.container,
                        ("127.0.0.77", port))


@pytest.mark.parametrize("kind", BACKENDS)
def test_direct_routing_to_a_container_is_refused_published_port_works(
        world: World, kind: type[Backend]) -> None:
    port, cport = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    rs = Ruleset(world.prefix, (BridgeRule(world.bridge, world.subnet, gateway=world.gateway),),
                 (PortRule("udp", "0.0.0.0", port, world.container_ip, cport, world.bridge),))
    backend = kind()
    with applied(backend, rs):
        assert received((world.container, "0.0.0.0", cport), world.outside,
                        (world.host_ip, port))
        assert not received((world.container, "0.0.0.0", cport), world.outside,
                            (world.container_ip, cport))
        if isinstance(backend, IptablesFirewall):   # the accept of old, without --ctstate DNAT
            run(["iptables", "-w", "-I", f"{world.prefix}-PORTS", "-d", world.container_ip,
                 "-p", "udp", "--dport", str(cport), "-j", "ACCEPT"])
            assert received((world.container, "0.0.0.0", cport), world.outside,
                            (world.container_ip, cport))


@pytest.mark.parametrize("kind", BACKENDS)
def test_resolver_port_redirect_and_lan_refused(world: World, kind: type[Backend]) -> None:
    dns_port = free_port(socket.SOCK_DGRAM)
    rs = Ruleset(world.prefix, (BridgeRule(world.bridge, world.subnet, gateway=world.gateway,
                                           dns_port=dns_port),))
    backend = kind()
    with applied(backend, rs):
        assert received((None, world.gateway, dns_port), world.container,
                        (world.gateway, 53))
        assert not received((None, world.gateway, dns_port), world.outside,
                            (world.gateway, dns_port))
        _empty_chain(backend, world.prefix, "IN", "input")
        assert received((None, world.gateway, dns_port), world.outside,
                        (world.gateway, dns_port))


def test_a_removed_jump_is_noticed_and_put_back(world: World) -> None:
    rs = Ruleset(world.prefix, (BridgeRule(world.bridge, world.subnet),))
    backend = IptablesFirewall()
    with applied(backend, rs):
        assert backend.intact(rs)
        run(["iptables", "-w", "-D", "FORWARD", "-j", f"{world.prefix}-FWD"])
        assert not backend.intact(rs)
        backend.apply(rs)
        assert backend.intact(rs)
        run(["iptables", "-w", "-t", "raw", "-F", f"{world.prefix}-RAW"])   # a flushed chain
        assert not backend.intact(rs)
        backend.apply(rs)
        assert backend.intact(rs)
    assert world.prefix not in run(["iptables-save"]).stdout
