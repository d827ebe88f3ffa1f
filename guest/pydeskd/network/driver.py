"""The bridge driver: names, and the plumbing of networks and endpoints over the seams.

What it is for: every name pydesk gives the kernel is made here -- the default bridge
(``pydesk0``), user bridges (``pd-<12 hex of the network ID>``), host veth ends (``pdv`` + 11
hex of the container and network IDs, so a restarted daemon finds them), the firewall chain
prefix (``PYDESK``), netns files (``<exec-root>/netns/<id>``) -- and ``Plumbing`` performs
network up/down and endpoint join/leave through the seams (netlink, netns, sysctl, firewall,
proxies), so the service above is unit-tested with fakes. A daemon on a data root other than
the default one derives its bridge name and chain prefix from that root: several daemons (the
test suites') share one host without touching each other's bridges or rules.

A host-wide lock (``/run/pydesk-network/lock``, flock) is held around choosing a subnet and
bringing its bridge up, so two daemons starting at once cannot pick the same free pool. The
directory is 0700 and the file 0600 (a local user must not be able to take the lock and hang
every daemon), and it is taken without blocking, polled up to a deadline, then a clear error.
The same directory holds the marker ``ip_forward`` that says pydesk itself turned forwarding
on (so a restarted daemon still asks for the FORWARD policy DROP that goes with it).

Firewall: a rule set identical to the last one applied is not loaded again (a container
without published ports costs no ``iptables-restore``), but the backend is asked whether it
is still intact (one ``iptables-save``): another tool's reload is repaired at the next apply.

What it must never do: decide addresses or policy (the service and IPAM do).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network
from pathlib import Path

from pydeskd.containerd.errors import FailedPrecondition
from pydeskd.network.firewall import Ruleset
from pydeskd.network.iptables import (
    CheckedFirewall,
    Firewall,
    IptablesFirewall,
    NoFirewall,
    probe,
)
from pydeskd.network.model import Network
from pydeskd.network.netlink import Links, PyrouteLinks
from pydeskd.network.netns import BindMountedNamespaces, Namespaces
from pydeskd.network.nft import NftFirewall
from pydeskd.network.proxies import PortProxies, Proxies
from pydeskd.network.sysctl import ProcSysctls, Sysctls, route_localnet_key

DEFAULT_DATA_ROOT = Path("/var/lib/pydesk")
HOST_LOCK = Path("/run/pydesk-network/lock")
HOST_LOCK_TIMEOUT = 30.0     # seconds: a daemon holds it for a subnet choice, not longer
FORWARDING_MARKER = "ip_forward"


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
    host_lock_timeout: float = HOST_LOCK_TIMEOUT

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
        marker = self._forwarding_marker()
        self.forwarding_mine = marker is not None and marker.exists()

    def _forwarding_marker(self) -> Path | None:
        lock = self.seams.host_lock
        return None if lock is None else lock.parent / FORWARDING_MARKER

    def _private_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)

    @contextlib.contextmanager
    def host_lock(self) -> Iterator[None]:
        """Serialises subnet choice + bridge creation with other pydesk daemons. Raises
        FailedPrecondition when another holder keeps it past the deadline."""
        path = self.seams.host_lock
        if path is None:
            yield
            return
        self._private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)     # a file left by an older pydesk may be 0644
            deadline = time.monotonic() + self.seams.host_lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise FailedPrecondition(
                            f"the host network lock {path} is held by another process for "
                            f"more than {self.seams.host_lock_timeout:g}s (fuser -v {path} "
                            f"shows who)") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

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
        self._forwarding_on()

    def _forwarding_on(self) -> None:
        """Turns ip_forward on; when it was off, pydesk owns that decision and the next
        firewall apply sets the FORWARD policy DROP (see firewall.py)."""
        if self.seams.sysctls.read("net.ipv4.ip_forward") == "1":
            return
        marker = self._forwarding_marker()
        if marker is not None:
            self._private_dir(marker.parent)
            marker.touch(mode=0o600)
        self.forwarding_mine = True
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
        """Loads ``ruleset`` unless it is what this daemon loaded last and the backend says
        it is still intact (a container without published ports changes no rule: its start
        costs one check, no restore)."""
        fw = self.seams.firewall
        assert fw is not None
        if self.forwarding_mine:
            ruleset = replace(ruleset, forward_drop=True)
        if ruleset == self._applied and (not isinstance(fw, CheckedFirewall) or
                                         fw.intact(ruleset)):
            return
        self._applied = None
        fw.apply(ruleset)
        self._applied = ruleset

    def firewall_teardown(self) -> None:
        assert self.seams.firewall is not None
        self._applied = None
        self.seams.firewall.teardown(self.names.chain_prefix)
