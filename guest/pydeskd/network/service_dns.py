"""The embedded DNS side of NetworkService (a base class of it): the resolver's life, its
``lookup`` and its ``client`` check.

What it is for: one :class:`.dns.Resolver` in pydeskd's process, listening on each user
network's gateway at one port chosen free at start (not 53: a ``-p 53:53/udp`` must stay
possible; the firewall DNATs <gateway>:53 on the bridge to it), forwarding what is not a
container to the host's resolvers (reread when /etc/resolv.conf changes) or to the asking
container's ``--dns`` servers. ``lookup(client_ip, name)`` answers with the addresses of the
container called ``name`` (its name, an alias, its ID or short ID) on any of the asking
container's user networks; ``client(client_ip)`` refuses anyone who is not a container
endpoint pydesk knows, and forwards nothing for a container whose networks are all internal.

Lookups read :class:`DnsView`, an immutable snapshot replaced (under the service's lock) after
every change of networks or endpoints: they never wait for the service's lock, which a
container start holds through proxy starts and iptables calls.

What it must never do: answer for a container on another network than the client's, or take
the service's lock on a query.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydeskd.network.dns import ClientPolicy, Resolver
from pydeskd.network.dns_forward import Upstream
from pydeskd.network.model import Network
from pydeskd.shim.paths import atomic_write

if TYPE_CHECKING:
    from pydeskd.network.store import NetworkStore

log = logging.getLogger(__name__)

HOST_RESOLV = Path("/etc/resolv.conf")
RESOLV_CHECK_INTERVAL = 3.0    # seconds between two stat()s of the host's resolv.conf
DNS_SERVERS_FILE = "dns-servers.json"   # container ID -> its --dns servers, in the store's root


def host_resolv(path: Path = HOST_RESOLV) -> tuple[list[str], list[str]]:
    """The host's resolvers (loopback ones included: the embedded resolver runs in the host's
    namespace, where they answer) and search domains."""
    try:
        text = path.read_text()
    except OSError:
        text = ""
    servers: list[str] = []
    search: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "nameserver":
            servers.append(words[1])
        elif words and words[0] in ("search", "domain"):
            search = words[1:]
    return servers or ["8.8.8.8", "8.8.4.4"], search


class HostResolvWatch:
    """Rereads the host's resolv.conf into a resolver when it changed (a Wi-Fi, VPN or DHCP
    change rewrites it), checking at most every ``interval`` seconds. Thread-safe; a check
    never blocks a caller (another thread checking: skipped)."""

    def __init__(self, path: Path = HOST_RESOLV, interval: float = RESOLV_CHECK_INTERVAL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def load(self, resolver: Resolver) -> None:
        """Reads the file now (at start) into ``resolver``."""
        with self._lock:
            self._stamp = self._current_stamp()
            self._checked = self._monotonic()
            servers, search = host_resolv(self.path)
        resolver.set_upstreams(servers)
        resolver.set_search_domains(search)

    def check(self, resolver: Resolver) -> bool:
        """Rereads the file if it changed since the last read; True if it did."""
        now = self._monotonic()
        if now - self._checked < self.interval or not self._lock.acquire(blocking=False):
            return False
        try:
            self._checked = now
            stamp = self._current_stamp()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            servers, search = host_resolv(self.path)
        finally:
            self._lock.release()
        log.info("dns: the host's resolv.conf changed: upstreams now %s", servers)
        resolver.set_upstreams(servers)
        resolver.set_search_domains(search)
        return True


@dataclass(frozen=True)
class DnsClient:
    """A container endpoint as the resolver sees it: the user networks of its container,
    whether they are all internal, its own upstreams (``--dns``)."""

    networks: tuple[str, ...]
    internal: bool
    upstreams: tuple[Upstream, ...] = ()


@dataclass(frozen=True)
class DnsView:
    """What lookups read, without a lock: endpoint address -> client; network ID -> name ->
    addresses."""

    clients: Mapping[str, DnsClient] = field(default_factory=dict)
    names: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)


def _upstreams(servers: Sequence[str]) -> tuple[Upstream, ...]:
    out = []
    for text in servers:
        with contextlib.suppress(ValueError):
            out.append(Upstream.parse(text))
    return tuple(out)


def build_view(store: NetworkStore, dns_servers: Mapping[str, Sequence[str]]) -> DnsView:
    """The snapshot of ``store`` (and of containers' ``--dns`` servers, by container ID)."""
    user = {n.id: n for n in store.networks.values() if n.user_defined and n.pool is not None}
    names: dict[str, dict[str, list[str]]] = {net_id: {} for net_id in user}
    clients: dict[str, DnsClient] = {}
    for att in store.attachments.values():
        if att.active is None:
            continue
        mine = [e for e in att.active.endpoints if e.network_id in user]
        if not mine:
            continue
        client = DnsClient(tuple(e.network_id for e in mine),
                           all(user[e.network_id].internal for e in mine),
                           _upstreams(dns_servers.get(att.cid, ())))
        for ep in mine:
            clients[ep.address] = client
            cfg = att.config(ep.network_id)
            aliases = cfg.aliases if cfg is not None else ()
            for name in {att.name.lower(), att.cid[:12], att.cid,
                         *(a.lower() for a in aliases)}:
                if name:
                    names[ep.network_id].setdefault(name, []).append(ep.address)
    return DnsView(clients, {net_id: {k: tuple(v) for k, v in by_name.items()}
                             for net_id, by_name in names.items()})


class EmbeddedDns:
    store: NetworkStore
    lock: threading.RLock
    want_dns: bool
    resolver: Resolver | None
    _listening: dict[str, int]        # gateway -> the port the resolver serves there
    _dns_view: DnsView
    _dns_servers: dict[str, tuple[str, ...]]
    _resolv_watch: HostResolvWatch

    def _start_resolver(self) -> None:
        if not self.want_dns or self.resolver is not None:
            return
        try:
            resolver = Resolver(self.lookup, [], client=self.client)
            self._resolv_watch.load(resolver)
            self.resolver = resolver
        except Exception:
            log.exception("the embedded DNS resolver could not start")
            return
        for net in self.store.networks.values():
            if net.user_defined:
                self._listen(net)

    def _dns_port(self) -> int:
        """The port already served on another gateway (one for the daemon), 0 for none."""
        return next(iter(self._listening.values()), 0)

    def _listen(self, net: Network) -> None:
        if self.resolver is None or net.pool is None or net.pool.gateway in self._listening:
            return
        gateway = net.pool.gateway
        # The daemon's port where another gateway has it; taken here (something bound to
        # this gateway), a free one of this network's own: its DNAT names its port.
        for wanted in dict.fromkeys((self._dns_port(), 0)):
            try:
                self._listening[gateway] = self.resolver.listen(gateway, wanted)
                return
            except OSError as e:
                if e.errno != errno.EADDRINUSE or wanted == 0:
                    log.exception("the DNS resolver cannot listen on %s", gateway)
                    return
            except Exception:
                log.exception("the DNS resolver cannot listen on %s", gateway)
                return

    def _unlisten(self, net: Network) -> None:
        if self.resolver is None or net.pool is None or net.pool.gateway not in self._listening:
            return
        self._listening.pop(net.pool.gateway, None)
        with contextlib.suppress(Exception):
            self.resolver.unlisten(net.pool.gateway)

    def dns_port(self, gateway: str) -> int:
        """The port the resolver serves on ``gateway`` (0: it does not)."""
        return self._listening.get(gateway, 0)

    def _dns_servers_path(self) -> Path:
        return self.store.root / DNS_SERVERS_FILE

    def _load_dns_servers(self) -> None:
        """The containers' ``--dns`` servers as the last daemon kept them (live restore: a
        running container keeps asking its own servers)."""
        self._dns_servers = {}
        try:
            obj = json.loads(self._dns_servers_path().read_text())
            self._dns_servers = {str(cid): tuple(str(s) for s in servers)
                                 for cid, servers in dict(obj).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError):
            log.warning("ignoring an unreadable %s", self._dns_servers_path())

    def _set_dns_servers(self, cid: str, servers: Sequence[str]) -> None:
        """A container's ``--dns`` servers (at attach; none: the host's)."""
        wanted = tuple(str(s) for s in servers)
        if self._dns_servers.get(cid, ()) == wanted:
            return
        if wanted:
            self._dns_servers[cid] = wanted
        else:
            self._dns_servers.pop(cid, None)
        self._save_dns_servers()

    def _save_dns_servers(self) -> None:
        try:
            atomic_write(self._dns_servers_path(),
                         {cid: list(v) for cid, v in sorted(self._dns_servers.items())},
                         durable=self.store.durable)
        except OSError:
            log.exception("cannot keep the containers' --dns servers")

    def _refresh_dns(self) -> None:
        """Replaces the lookups' snapshot; called under the service's lock after a change."""
        kept = {cid: servers for cid, servers in self._dns_servers.items()
                if cid in self.store.attachments}
        if kept != self._dns_servers:
            self._dns_servers = kept
            self._save_dns_servers()
        self._dns_view = build_view(self.store, self._dns_servers)

    def client(self, client_ip: str) -> ClientPolicy | None:
        """The resolver's check: None (REFUSED) for an address that is no container endpoint
        on a user network; no forwarding when all its networks are internal."""
        if self.resolver is not None:
            self._resolv_watch.check(self.resolver)
        found = self._dns_view.clients.get(client_ip)
        if found is None:
            return None
        return ClientPolicy(forward=not found.internal, upstreams=found.upstreams)

    def lookup(self, client_ip: str, name: str) -> list[str] | None:
        """The resolver's question: the IPv4 addresses of container ``name`` (its name, an
        alias, its ID or short ID) on ``client_ip``'s user networks; None if not ours."""
        view = self._dns_view
        client = view.clients.get(client_ip)
        if client is None:
            return None
        wanted = name.rstrip(".").lower()
        found: list[str] = []
        for net_id in client.networks:
            found += view.names.get(net_id, {}).get(wanted, ())
        return list(dict.fromkeys(found)) or None
