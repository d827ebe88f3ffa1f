"""The embedded resolver's side of the wire to its upstreams: one query out, one answer back.

An upstream is one of the host's resolvers. A query goes out over UDP from a connected socket
(the kernel drops datagrams from anyone else), with an id chosen by the caller; only an answer
with that id, the response bit and the same question is taken, anything else is ignored until
the timeout. TCP (RFC 1035 4.2.2, two-byte length prefix) serves truncated answers.

Blocking calls on the caller's thread. This module must never wait past its timeout and never
return an answer that does not match the question asked.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from dataclasses import dataclass

from pydeskd.network.dns_wire import HEADER_SIZE, parse_header, read_name

DNS_PORT = 53


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int = DNS_PORT

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """``1.1.1.1``, ``1.1.1.1:5353``, ``::1`` or ``[::1]:5353``. Raises ValueError."""
        host, port = text.strip(), DNS_PORT
        if host.startswith("["):
            host, _, rest = host[1:].partition("]")
            if rest:
                port = int(rest.removeprefix(":"))
        elif host.count(":") == 1:
            host, _, port_text = host.partition(":")
            port = int(port_text)
        ipaddress.ip_address(host)
        if not 0 < port < 65536:
            raise ValueError(f"bad port in upstream {text!r}")
        return cls(host, port)


def _reply_matches(reply: bytes, request: bytes, request_id: int) -> bool:
    """Whether ``reply`` answers ``request``: same id, a response, same question bytes."""
    if len(reply) < HEADER_SIZE:
        return False
    header = parse_header(reply)
    if header.id != request_id or not header.is_response:
        return False
    qdcount = struct.unpack_from("!H", request, 4)[0]
    if header.qdcount != qdcount:
        return False
    question_end = _question_end(request)
    return reply[HEADER_SIZE:question_end].lower() == request[HEADER_SIZE:question_end].lower()


def _question_end(message: bytes) -> int:
    _, offset = read_name(message, HEADER_SIZE)
    return offset + 4


def exchange_udp(upstream: Upstream, request: bytes, request_id: int, timeout: float) -> bytes:
    """The upstream's answer to ``request`` over UDP. Raises OSError (TimeoutError)."""
    deadline = time.monotonic() + timeout
    with socket.socket(upstream.family, socket.SOCK_DGRAM) as sock:
        # connect(): the kernel drops datagrams from any other address, and an ICMP
        # "port unreachable" fails the recv at once instead of waiting for the timeout.
        sock.connect((upstream.host, upstream.port))
        sock.send(request)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer")
            sock.settimeout(left)
            reply = sock.recv(65535)
            if _reply_matches(reply, request, request_id):
                return reply


def exchange_tcp(upstream: Upstream, request: bytes, request_id: int, timeout: float) -> bytes:
    """The upstream's answer to ``request`` over TCP. Raises OSError (TimeoutError)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((upstream.host, upstream.port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(request)) + request)
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            reply = recv_message(sock)
            if reply is None:
                raise ConnectionError("upstream closed the connection")
            if _reply_matches(reply, request, request_id):
                return reply


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> bytes | None:
    """One length-prefixed DNS message (RFC 1035 4.2.2); None at EOF."""
    prefix = _recv_exactly(sock, 2)
    if prefix is None:
        return None
    (length,) = struct.unpack("!H", prefix)
    return _recv_exactly(sock, length) if length else b""
