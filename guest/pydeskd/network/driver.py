"""The bridge driver: names, and the plumbing of networks and endpoints over the seams.

What it is for: every name pydesk gives the kernel is made here -- the default bridge
(``pydesk0``), user bridges (``pd-<12 hex of the network ID>``), host veth ends (``pdv`` + 11
hex of the container and network IDs, so a restarted daemon finds them), the firewall chain
prefix (``PYDESK``), netns files (``<exec-root>/netns/<id>``) -- and ``Plumbing`` performs
network up/down and endpoint join/leave through the seams (netlink, netns, sysctl, firewall,
proxies), so the service above is unit-tested with fakes. A daemon on a data root other than
the default one derives its bridge name and chain prefix from that root: several daemons (the
test suites') share one host without touching each other's bridges or rules.

A host-wide lock (``/run/pydesk-network.lock``, flock) is held around choosing a subnet and
bringing its bridge up, so two daemons starting at once cannot pick the same free pool.

What it must never do: decide addresses or policy (the service and IPAM do).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from pydeskd.network.firewall import Ruleset
from pydeskd.network.iptables import Firewall, IptablesFirewall, NoFirewall, probe
from pydeskd.network.model import Network
from pydeskd.network.netlink import Links, PyrouteLinks
from pydeskd.network.netns import BindMountedNamespaces, Namespaces
from pydeskd.network.nft import NftFirewall
from pydeskd.network.proxies import PortProxies, Proxies
from pydeskd.network.sysctl import ProcSysctls, Sysctls, route_localnet_key

DEFAULT_DATA_ROOT = Path("/var/lib/pydesk")
HOST_LOCK = Path("/run/pydesk-network.lock")


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Names:
    default_bridge: str
    chain_prefix: str
    netns_dir: Path
    proxies_dir: Path

    @staticmethod
    def for_daemon(data_root: Path, exec_root: Path) -> Names:
        if data_root.resolve() == DEFAULT_DATA_ROOT:
            bridge, prefix = "pydesk0", "PYDESK"
        else:
            tag = _digest(str(data_root.resolve()), 8)
            bridge, prefix = f"pd0-{tag}", f"PYDESK-{tag}"
        return Names(bridge, prefix, exec_root / "netns", exec_root / "network" / "proxies")

    @staticmethod
    def user_bridge(network_id: str) -> str:
        return f"pd-{network_id[:12]}"

    @staticmethod
    def host_veth(cid: str, network_id: str) -> str:
        return f"pdv{_digest(cid + network_id, 11)}"

    def netns(self, cid: str) -> Path:
        return self.netns_dir / cid


@dataclass
class Seams:
    links: Links = field(default_factory=PyrouteLinks)
    namespaces: Namespaces = field(default_factory=BindMountedNamespaces)
    sysctls: Sysctls = field(default_factory=ProcSysctls)
    firewall: Firewall | None = None
    proxies: Proxies = field(default_factory=PortProxies)
    host_lock: Path | None = HOST_LOCK

    def __post_init__(self) -> None:
        if self.firewall is None:
            kind = probe()
            self.firewall = IptablesFirewall() if kind == "iptables" else \
                NftFirewall() if kind == "nft" else NoFirewall()


class Plumbing:
    def __init__(self, names: Names, seams: Seams) -> None:
        self.names = names
        self.seams = seams
        self._applied: Ruleset | None = None

    @contextlib.contextmanager
    def host_lock(self) -> Iterator[None]:
        """Serialises subnet choice + bridge creation with other pydesk daemons."""
        path = self.seams.host_lock
        if path is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def host_routes(self) -> list[IPv4Network]:
        return self.seams.links.host_routes()

    def bridge_exists(self, net: Network) -> bool:
        return bool(net.bridge) and self.seams.links.link_exists(net.bridge)

    def network_up(self, net: Network) -> None:
        pool = net.pool
        if net.driver != "bridge" or pool is None:
            return
        prefixlen = IPv4Network(pool.subnet).prefixlen
        self.seams.links.ensure_bridge(net.bridge, pool.gateway, prefixlen)
        with contextlib.suppress(OSError):
            self.seams.sysctls.write(route_localnet_key(net.bridge), "1")
        self.seams.sysctls.write("net.ipv4.ip_forward", "1")

    def network_down(self, net: Network) -> None:
        if net.driver == "bridge" and net.bridge:
            self.seams.links.delete_link(net.bridge)

    def sandbox_create(self, cid: str) -> Path:
        path = self.names.netns(cid)
        if self.seams.namespaces.exists(path):
            self.seams.namespaces.delete(path)
        self.seams.namespaces.create(path)
        try:
            self.seams.links.loopback_up(str(path))
        except BaseException:
            self.seams.namespaces.delete(path)
            raise
        return path

    def sandbox_delete(self, path: Path) -> None:
        self.seams.namespaces.delete(path)

    def firewall(self, ruleset: Ruleset) -> None:
        """Loads ``ruleset`` unless it is what this daemon loaded last (a container without
        published ports changes no rule: its start costs no iptables run)."""
        assert self.seams.firewall is not None
        if ruleset == self._applied:
            return
        self._applied = None
        self.seams.firewall.apply(ruleset)
        self._applied = ruleset

    def firewall_teardown(self) -> None:
        assert self.seams.firewall is not None
        self._applied = None
        self.seams.firewall.teardown(self.names.chain_prefix)
