"""The embedded DNS server: containers' names answered in pydeskd, everything else forwarded.

Docker answers container names from a resolver inside the daemon (127.0.0.11 in each
container). pydeskd does the same on the address(es) its network layer asks for (a bridge's
gateway): :meth:`Resolver.listen` serves UDP and TCP port 53 there. For every query the network
layer's ``lookup(client_ip, name)`` decides: a list of addresses is the answer (authoritative,
TTL 600 like Docker; a known name asked for a type it has no address of gets NOERROR with no
answers; an empty list is NXDOMAIN), None means "not ours": the query goes to the upstreams
(the host's resolvers) and their answer goes back to the client with the client's query id.

An optional ``client(client_ip)`` says who may ask and how: None refuses the client (REFUSED:
the resolver is no open forwarder for whatever can route to a gateway), a
:class:`ClientPolicy` says whether names that are not ours are forwarded at all (not for a
container on internal networks only: DNS would be its way out) and to which upstreams (a
container's ``--dns`` servers; none: the resolver's own).

Threads, not asyncio (pydeskd's other I/O is threads too): one thread per listening address
multiplexes its UDP socket, its TCP listener and a wake-up pipe; each TCP client gets a thread
(at most MAX_TCP_CLIENTS), forwarded queries run on a small pool (at most MAX_INFLIGHT at a
time: past that, queries are dropped and the client retries, like an overloaded server).

This module must never let a packet kill a serving thread (every handler catches everything),
never answer a response (no reflection loops between two resolvers), and never forward to one
of its own listening addresses. ``lookup`` is called from several threads at once.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydeskd.network.dns_forward import (
    DNS_PORT,
    Upstream,
    exchange_tcp,
    exchange_udp,
    recv_message,
)
from pydeskd.network.dns_wire import (
    CLASS_IN,
    QType,
    Query,
    RCode,
    WireError,
    build_response,
    error_from_header,
    parse_header,
    parse_query,
    with_id,
)

log = logging.getLogger(__name__)

Lookup = Callable[[str, str], Sequence[str] | None]


@dataclass(frozen=True)
class ClientPolicy:
    """How one client is served: ``forward`` False answers NXDOMAIN for names that are not
    ours; ``upstreams`` replace the resolver's own when not empty."""

    forward: bool = True
    upstreams: tuple[Upstream, ...] = ()


ClientCheck = Callable[[str], ClientPolicy | None]

FORWARD_TIMEOUT = 2.0        # per upstream, then the next one, then SERVFAIL
TCP_IDLE_TIMEOUT = 10.0      # a TCP client that sends nothing this long is dropped
MAX_TCP_CLIENTS = 128
MAX_INFLIGHT = 256
FORWARD_WORKERS = 16
MAX_TCP_MESSAGE = 65535
PAIR_TRIES = 20              # port 0: UDP's free port taken for TCP, another pair
IP_FREEBIND = 15             # linux/in.h: bind an address the host does not have (yet)


def _client_ip(address: str) -> str:
    """The client's address as the network layer knows it (no IPv4-mapped IPv6 form)."""
    return address.removeprefix("::ffff:") if address.startswith("::ffff:") else address


class Resolver:
    """An embedded DNS server: see the module docstring. Thread-safe."""

    def __init__(self, lookup: Lookup, upstreams: Sequence[str], *,
                 search_domains: Sequence[str] = (), timeout: float = FORWARD_TIMEOUT,
                 client: ClientCheck | None = None) -> None:
        self._lookup = lookup
        self._client = client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._endpoints: dict[str, _Endpoint] = {}
        self._upstreams: tuple[Upstream, ...] = ()
        self._search: tuple[str, ...] = ()
        self.set_search_domains(search_domains)
        self._pool = ThreadPoolExecutor(FORWARD_WORKERS, thread_name_prefix="dns-forward")
        self._inflight = threading.BoundedSemaphore(MAX_INFLIGHT)
        self._closed = False
        self.set_upstreams(upstreams)

    # -- configuration ---------------------------------------------------------------------

    def set_upstreams(self, upstreams: Sequence[str]) -> None:
        """Replaces the upstream resolvers (the host's resolv.conf changed). Unparsable
        entries are logged and left out."""
        parsed = []
        for text in upstreams:
            try:
                parsed.append(Upstream.parse(text))
            except ValueError:
                log.warning("dns: ignoring upstream %r (not an address)", text)
        self._upstreams = tuple(parsed)

    def set_search_domains(self, domains: Sequence[str]) -> None:
        """The host's search domains (stripped from a name that is not ours, see _resolve)."""
        self._search = tuple(d.strip(".").lower() for d in domains if d.strip("."))

    def listen(self, address: str, port: int = DNS_PORT) -> int:
        """Serves UDP and TCP ``port`` on ``address`` (port 0: one free port for both) and
        returns the port; a no-op if it already serves ``address``. Raises OSError if a
        socket cannot be bound (e.g. the port is taken there)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("resolver is closed")
            if address not in self._endpoints:
                self._endpoints[address] = _Endpoint(self, address, port)
            return int(self._endpoints[address].udp.getsockname()[1])

    def ports(self, address: str) -> tuple[int, int]:
        """The (UDP, TCP) ports served on ``address`` (tests listen on port 0). KeyError if
        not listening there."""
        endpoint = self._endpoints[address]
        return endpoint.udp.getsockname()[1], endpoint.tcp.getsockname()[1]

    def unlisten(self, address: str) -> None:
        """Stops serving ``address`` (its network went away); a no-op if it did not."""
        with self._lock:
            endpoint = self._endpoints.pop(address, None)
        if endpoint is not None:
            endpoint.close()

    def close(self) -> None:
        """Stops every endpoint and the forwarding pool. Idempotent."""
        with self._lock:
            self._closed = True
            endpoints, self._endpoints = list(self._endpoints.values()), {}
        for endpoint in endpoints:
            endpoint.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- answering -------------------------------------------------------------------------

    def answer_locally(self, data: bytes, client_ip: str) -> tuple[bytes | None, Query | None]:
        """Either (the reply, None): answered here, or an error, or (None, None): not worth a
        reply; or (None, query): to forward."""
        try:
            query = parse_query(data)
        except WireError:
            return error_from_header(data, RCode.FORMERR), None
        if query.header.opcode != 0:
            return build_response(query, RCode.NOTIMP, authoritative=False), None
        try:
            policy = self._policy(client_ip)
            if policy is None:
                return build_response(query, RCode.REFUSED, authoritative=False), None
            if query.question.qclass != CLASS_IN:
                addresses = None
            else:
                addresses = self._resolve(client_ip, query.question.name.lower())
        except Exception:
            log.exception("dns: lookup of %r failed", query.question.name)
            return build_response(query, RCode.SERVFAIL, authoritative=False), None
        if addresses is None:
            if not policy.forward:
                return build_response(query, RCode.NXDOMAIN, authoritative=False), None
            return None, query
        if not addresses:
            return build_response(query, RCode.NXDOMAIN), None
        answers = _matching(addresses, query.question.qtype)
        return build_response(query, RCode.NOERROR, answers), None

    def _policy(self, client_ip: str) -> ClientPolicy | None:
        return self._client(client_ip) if self._client is not None else _ANYONE

    def _resolve(self, client_ip: str, name: str) -> Sequence[str] | None:
        addresses = self._lookup(client_ip, name)
        if addresses is None:
            # A client with the host's search domains asks "web.example.com" before "web":
            # answer it as "web" at once rather than forward it upstream for an NXDOMAIN.
            for domain in self._search:
                if name.endswith("." + domain):
                    addresses = self._lookup(client_ip, name[:-len(domain) - 1])
                    if addresses is not None:
                        break
        return addresses

    def forward(self, data: bytes, query: Query, *, tcp: bool, client_ip: str = "") -> bytes:
        """The upstreams' answer to ``data`` with the client's id, or SERVFAIL. A truncated
        UDP answer is retried over TCP for a TCP client; a UDP client gets it truncated, as
        the upstream sent it, and retries over TCP itself. The client's own upstreams (its
        policy's) replace the resolver's."""
        own = self._own_endpoints()
        policy = self._policy(client_ip) if client_ip else None
        upstreams = policy.upstreams if policy is not None and policy.upstreams else \
            self._upstreams
        for upstream in upstreams:
            if (upstream.host, upstream.port) in own:
                continue
            request_id = secrets.randbits(16)
            request = with_id(data, request_id)
            try:
                reply = exchange_udp(upstream, request, request_id, self._timeout)
                if tcp and parse_header(reply).truncated:
                    reply = exchange_tcp(upstream, request, request_id, self._timeout)
            except (OSError, WireError) as e:
                log.debug("dns: upstream %s:%d failed: %s", upstream.host, upstream.port, e)
                continue
            return with_id(reply, query.header.id)
        return build_response(query, RCode.SERVFAIL, authoritative=False)

    def _own_endpoints(self) -> set[tuple[str, int]]:
        own = set()
        for endpoint in list(self._endpoints.values()):
            with contextlib.suppress(OSError):
                own.add((endpoint.address, endpoint.udp.getsockname()[1]))
        return own

    def submit_forward(self, job: Callable[[], None]) -> bool:
        """Runs ``job`` on the forwarding pool; False (dropped) when MAX_INFLIGHT are running."""
        if not self._inflight.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                job()
            except Exception:
                log.exception("dns: forwarding failed")
            finally:
                self._inflight.release()

        try:
            self._pool.submit(run)
        except RuntimeError:  # the pool is shut down: the resolver is closing
            self._inflight.release()
            return False
        return True


_ANYONE = ClientPolicy()
_VERSIONS: dict[int, tuple[int, ...]] = {QType.A: (4,), QType.AAAA: (6,), QType.ANY: (4, 6)}


def _matching(addresses: Sequence[str], qtype: int) -> list[str]:
    """The addresses a question of ``qtype`` is answered with (NODATA when none)."""
    versions = _VERSIONS.get(qtype, ())
    out = []
    for address in addresses:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(address).version in versions:
                out.append(address)
    return out


def _bind_pair(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP bound to one port of ``address`` (port 0: the one UDP got)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        for sock in (udp, tcp):
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # The gateway's address may come and go with its bridge (a restart re-creates
            # it): bind it regardless, and serve it whenever it is there.
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((address, port))
        tcp.bind((address, udp.getsockname()[1]))
        tcp.listen(64)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


class _Endpoint:
    """UDP and TCP on one address, served by one thread (plus one per TCP client)."""

    def __init__(self, resolver: Resolver, address: str, port: int) -> None:
        self.resolver = resolver
        self.address = address
        # Port 0: the TCP side takes the port the kernel gave UDP (a DNAT sends both
        # protocols of <gateway>:53 to one port); taken for TCP, another pair is tried.
        for attempt in range(PAIR_TRIES if port == 0 else 1):
            try:
                self.udp, self.tcp = _bind_pair(address, port)
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or attempt == PAIR_TRIES - 1 or port != 0:
                    raise
        self.udp.setblocking(False)
        self.tcp.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=f"dns-{address}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(5)
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for sock in (self.udp, self.tcp):
            sock.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.udp, selectors.EVENT_READ)
            selector.register(self.tcp, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is self.udp:
                        self._serve_udp()
                    elif key.fileobj is self.tcp:
                        self._accept_tcp()

    def _serve_udp(self) -> None:
        for _ in range(64):  # drain a burst, then let the listener have a turn
            try:
                data, peer = self.udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. ECONNREFUSED left by an earlier ICMP error
                log.debug("dns: udp recv on %s: %s", self.address, e)
                return
            try:
                self._answer_udp(data, peer)
            except Exception:
                log.exception("dns: unexpected error answering %s", peer[0])

    def _answer_udp(self, data: bytes, peer: tuple[str, int]) -> None:
        reply, query = self.resolver.answer_locally(data, _client_ip(peer[0]))
        if reply is not None:
            self._send_udp(reply, peer)
        elif query is not None:
            def job() -> None:
                self._send_udp(self.resolver.forward(data, query, tcp=False,
                                                     client_ip=_client_ip(peer[0])), peer)

            self.resolver.submit_forward(job)

    def _send_udp(self, reply: bytes, peer: tuple[str, int]) -> None:
        try:
            self.udp.sendto(reply, peer)
        except OSError as e:
            log.debug("dns: udp send to %s: %s", peer[0], e)

    def _accept_tcp(self) -> None:
        try:
            conn, peer = self.tcp.accept()
        except OSError:
            return
        with self._clients_lock:
            if len(self._clients) >= MAX_TCP_CLIENTS:
                conn.close()
                return
            self._clients.add(conn)
        threading.Thread(target=self._serve_tcp_client, args=(conn, peer), daemon=True,
                         name=f"dns-tcp-{peer[0]}").start()

    def _serve_tcp_client(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        client_ip = _client_ip(peer[0])
        try:
            conn.setblocking(True)
            conn.settimeout(TCP_IDLE_TIMEOUT)
            while not self._stopping:
                data = recv_message(conn)
                if data is None:
                    return
                reply, query = self.resolver.answer_locally(data, client_ip)
                if query is not None:
                    reply = self.resolver.forward(data, query, tcp=True, client_ip=client_ip)
                if reply is None:
                    return  # not even a header: not a DNS client, hang up
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, ValueError):
            return
        except Exception:
            log.exception("dns: unexpected error serving %s over tcp", client_ip)
        finally:
            with self._clients_lock:
                self._clients.discard(conn)
            conn.close()
