"""The network layer's seams for real (root): pinned namespaces, netlink (bridge, veth born in
a namespace, routes), both firewall backends (iptables-restore and nft), sysctls. Every test
removes what it made, with names of its own."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from pydeskd.network.firewall import BridgeRule, PortRule, Ruleset
from pydeskd.network.iptables import IptablesFirewall
from pydeskd.network.netlink import PyrouteLinks, in_netns
from pydeskd.network.netns import BindMountedNamespaces
from pydeskd.network.nft import NftFirewall, table_name
from pydeskd.network.sysctl import ProcSysctls
from tests.integration.network.conftest import free_subnet

pytestmark = pytest.mark.integration


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "netns" / "c1"
    spaces = BindMountedNamespaces()
    spaces.create(path)
    yield path
    spaces.delete(path)


def test_a_pinned_namespace_outlives_its_thread_and_goes(tmp_path: Path) -> None:
    spaces = BindMountedNamespaces()
    path = tmp_path / "ns"
    spaces.create(path)
    assert spaces.exists(path)
    assert os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino
    assert os.readlink("/proc/self/ns/net") == os.readlink(f"/proc/{os.getpid()}/ns/net")
    spaces.delete(path)
    assert not path.exists() and not spaces.exists(path)
    spaces.delete(path)   # idempotent


def test_bridge_and_veth_born_in_the_namespace(netns: Path) -> None:
    links = PyrouteLinks()
    tag = os.urandom(3).hex()
    bridge, veth = f"pdtb{tag}", f"pdv{tag}"
    subnet = IPv4Network(free_subnet())
    gateway, address = str(subnet.network_address + 1), str(subnet.network_address + 2)
    try:
        links.ensure_bridge(bridge, gateway, subnet.prefixlen)
        links.ensure_bridge(bridge, gateway, subnet.prefixlen)   # idempotent
        assert subnet in links.host_routes()
        links.loopback_up(str(netns))
        links.add_veth(veth, bridge, netns=str(netns), ifname="eth0", address=address,
                       prefixlen=subnet.prefixlen, mac="02:42:0a:00:00:02", gateway=gateway,
                       default_route=True)
        assert links.bridge_ports(bridge) == [veth]
        seen: list[object] = []
        in_netns(str(netns), lambda ip: seen.extend(
            (link.get("ifname"), link.get("address")) for link in ip.link("dump")))
        assert ("eth0", "02:42:0a:00:00:02") in seen
        links.set_default_route(str(netns), gateway)   # replace: no "File exists"
        routes: list[object] = []
        in_netns(str(netns), lambda ip: routes.extend(
            r.get("gateway") for r in ip.route("dump", family=2) if r.get("gateway")))
        assert routes == [gateway]
        ping = subprocess.run(["ip", "netns", "exec", str(netns), "ping", "-c1", "-W2",
                               gateway], capture_output=True, check=False) if \
            Path("/usr/bin/ping").exists() or Path("/bin/ping").exists() else None
        if ping is not None:
            assert ping.returncode == 0, ping.stderr
    finally:
        links.delete_link(veth)
        links.delete_link(bridge)
    assert not links.link_exists(bridge) and not links.link_exists(veth)


def _rules() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout


def _ruleset(prefix: str) -> Ruleset:
    return Ruleset(prefix, (BridgeRule("pdtfw0", "10.251.0.0/24"),),
                   (PortRule("tcp", "0.0.0.0", 18080, "10.251.0.2", 80, "pdtfw0"),))


def test_iptables_backend_replaces_and_removes_its_chains() -> None:
    prefix = f"PYDESK-t{os.urandom(3).hex()}"
    fw = IptablesFirewall()
    try:
        fw.apply(_ruleset(prefix))
        fw.apply(_ruleset(prefix))           # replaced, not doubled
        text = _rules()
        assert text.count(f"-A {prefix}-DNAT -p tcp -m tcp --dport 18080") == 1
        assert text.count(f"-j {prefix}-FWD") == 1
        fw.apply(Ruleset(prefix))            # the owner went: its rules go
        assert "18080" not in "\n".join(ln for ln in _rules().splitlines() if prefix in ln)
    finally:
        fw.teardown(prefix)
    assert prefix not in _rules()


def test_nft_backend_replaces_and_removes_its_table() -> None:
    prefix = f"PYDESK-t{os.urandom(3).hex()}"
    fw = NftFirewall()
    table = table_name(prefix)
    try:
        fw.apply(_ruleset(prefix))
        fw.apply(_ruleset(prefix))
        listing = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                                 text=True, check=True).stdout
        assert listing.count("dnat to 10.251.0.2:80") == 1
        assert "masquerade" in listing
    finally:
        fw.teardown(prefix)
    done = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                          check=False)
    assert done.returncode != 0


def test_sysctls_read() -> None:
    assert ProcSysctls().read("net.ipv4.ip_forward") in ("0", "1")
