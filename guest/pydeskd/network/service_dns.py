"""The embedded DNS side of NetworkService (a base class of it): the resolver's life and its
``lookup``.

What it is for: one :class:`.dns.Resolver` in pydeskd's process, listening on each user
network's gateway (port 53, the address containers' resolv.conf names), forwarding to the
host's resolvers what is not a container; ``lookup(client_ip, name)`` answers with the
addresses of the container called ``name`` (its name, an alias, its ID or short ID) on the
client's own network only, so networks do not see each other's names.

What it must never do: answer for a container on another network than the client's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING

from pydeskd.network.dns import Resolver
from pydeskd.network.model import Network

if TYPE_CHECKING:
    from pydeskd.network.store import NetworkStore

log = logging.getLogger(__name__)


def host_resolv(path: Path = Path("/etc/resolv.conf")) -> tuple[list[str], list[str]]:
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


class EmbeddedDns:
    store: NetworkStore
    lock: threading.RLock
    want_dns: bool
    resolver: Resolver | None
    _listening: set[str]

    def _start_resolver(self) -> None:
        if not self.want_dns or self.resolver is not None:
            return
        try:
            servers, search = host_resolv()
            self.resolver = Resolver(self.lookup, servers, search_domains=search)
        except Exception:
            log.exception("the embedded DNS resolver could not start")
            return
        for net in self.store.networks.values():
            if net.user_defined:
                self._listen(net)

    def _listen(self, net: Network) -> None:
        if self.resolver is None or net.pool is None or net.pool.gateway in self._listening:
            return
        try:
            self.resolver.listen(net.pool.gateway)
            self._listening.add(net.pool.gateway)
        except Exception:
            log.exception("the DNS resolver cannot listen on %s", net.pool.gateway)

    def _unlisten(self, net: Network) -> None:
        if self.resolver is None or net.pool is None or net.pool.gateway not in self._listening:
            return
        self._listening.discard(net.pool.gateway)
        with contextlib.suppress(Exception):
            self.resolver.unlisten(net.pool.gateway)

    def lookup(self, client_ip: str, name: str) -> list[str] | None:
        """The resolver's question: the IPv4 addresses of container ``name`` (its name, an
        alias, its ID or short ID) on ``client_ip``'s user network; None if not ours."""
        wanted = name.rstrip(".").lower()
        try:
            client = IPv4Address(client_ip)
        except ValueError:
            return None
        with self.lock:
            net = next((n for n in self.store.networks.values() if n.user_defined
                        and n.pool is not None and client in IPv4Network(n.pool.subnet)),
                       None)
            if net is None:
                return None
            found: list[str] = []
            for att in self.store.attachments.values():
                ep = att.active.endpoint(net.id) if att.active is not None else None
                cfg = att.config(net.id)
                if ep is None or cfg is None:
                    continue
                names = {att.name.lower(), att.cid[:12], att.cid,
                         *(a.lower() for a in cfg.aliases)}
                if wanted in names:
                    found.append(ep.address)
        return found or None
