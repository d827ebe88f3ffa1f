"""The embedded resolver (pydeskd.network.dns.Resolver) on 127.0.0.1 random ports, against a
fake upstream: local answers, forwarding, truncation, timeouts, and hostile clients."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from pydeskd.network import dns_wire as w
from pydeskd.network.dns import Resolver
from pydeskd.network.dns_forward import Upstream
from tests.unit.network_dns.fake_upstream import FakeUpstream

NAMES = {"web": ["172.18.0.2"], "db": ["172.18.0.3", "172.18.0.4"], "gone": []}


class Server:
    """A resolver listening on 127.0.0.1 and what its lookup was asked."""

    def __init__(self, upstreams: Sequence[str], **options: object) -> None:
        self.calls: list[tuple[str, str]] = []
        self.resolver = Resolver(self.lookup, upstreams, **options)  # type: ignore[arg-type]
        self.resolver.listen("127.0.0.1", 0)
        self.udp_port, self.tcp_port = self.resolver.ports("127.0.0.1")

    def lookup(self, client_ip: str, name: str) -> list[str] | None:
        self.calls.append((client_ip, name))
        if name == "boom":
            raise RuntimeError("lookup failed")
        return NAMES.get(name)

    def udp(self, data: bytes, timeout: float = 5.0) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(data, ("127.0.0.1", self.udp_port))
            return sock.recv(65535)

    def ask(self, name: str, qtype: int = w.QType.A, message_id: int = 0x4242) -> bytes:
        return self.udp(w.build_query(message_id, name, qtype))

    def tcp(self, *messages: bytes) -> list[bytes]:
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=5) as sock:
            replies = []
            for data in messages:
                sock.sendall(struct.pack("!H", len(data)) + data)
                length = struct.unpack("!H", _recv_exactly(sock, 2))[0]
                replies.append(_recv_exactly(sock, length))
            return replies


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def _addresses(answer: bytes) -> list[str]:
    """The A/AAAA addresses of an answer built by dns_wire (name pointers only)."""
    header = w.parse_header(answer)
    _, offset = w.read_name(answer, w.HEADER_SIZE)
    offset += 4
    out = []
    for _ in range(header.ancount):
        _, offset = w.read_name(answer, offset)
        rtype, _, _, length = struct.unpack_from("!HHIH", answer, offset)
        offset += 10
        rdata = answer[offset:offset + length]
        offset += length
        out.append(socket.inet_ntop(socket.AF_INET if rtype == w.QType.A else socket.AF_INET6,
                                    rdata))
    return out


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture
def server(upstream: FakeUpstream) -> Iterator[Server]:
    made = Server([upstream.address], timeout=0.5, search_domains=["corp.example."])
    yield made
    made.resolver.close()


def test_a_known_name_is_answered_here_with_ttl_600(server: Server,
                                                    upstream: FakeUpstream) -> None:
    answer = server.ask("db")
    header = w.parse_header(answer)
    assert header.id == 0x4242
    assert header.rcode == w.RCode.NOERROR
    assert header.flags & w.AA
    assert sorted(_addresses(answer)) == ["172.18.0.3", "172.18.0.4"]
    assert struct.unpack_from("!I", answer, len(answer) - 10)[0] == 600
    assert server.calls == [("127.0.0.1", "db")]
    assert upstream.udp_questions == []


def test_aaaa_for_a_known_name_is_nodata_and_an_empty_list_is_nxdomain(server: Server) -> None:
    nodata = w.parse_header(server.ask("web", w.QType.AAAA))
    assert (nodata.rcode, nodata.ancount) == (w.RCode.NOERROR, 0)
    assert w.parse_header(server.ask("gone")).rcode == w.RCode.NXDOMAIN
    assert w.parse_header(server.ask("gone", w.QType.AAAA)).rcode == w.RCode.NXDOMAIN


def test_names_are_looked_up_lowercased_and_the_question_is_echoed_as_sent(
        server: Server) -> None:
    answer = server.ask("WeB")
    assert _addresses(answer) == ["172.18.0.2"]
    assert w.read_name(answer, w.HEADER_SIZE)[0] == "WeB"
    assert server.calls == [("127.0.0.1", "web")]


def test_a_search_domain_is_stripped_when_the_full_name_is_not_ours(server: Server) -> None:
    assert _addresses(server.ask("web.corp.example")) == ["172.18.0.2"]
    assert server.calls == [("127.0.0.1", "web.corp.example"), ("127.0.0.1", "web")]


def test_other_names_are_forwarded_and_answered_with_the_clients_id(
        server: Server, upstream: FakeUpstream) -> None:
    upstream.answers["example.org"] = ["203.0.113.9"]
    answer = server.ask("example.org", message_id=0x1111)
    assert w.parse_header(answer).id == 0x1111
    assert _addresses(answer) == ["203.0.113.9"]
    assert not w.parse_header(answer).flags & w.AA  # the upstream's flags, relayed
    assert [name for _, name in upstream.udp_questions] == ["example.org"]
    # TCP clients are forwarded too.
    (answer,) = server.tcp(w.build_query(0x2222, "example.org"))
    assert w.parse_header(answer).id == 0x2222
    assert _addresses(answer) == ["203.0.113.9"]


def test_a_truncated_upstream_answer_is_retried_over_tcp_for_a_tcp_client(
        server: Server, upstream: FakeUpstream) -> None:
    upstream.truncate_udp = True
    upstream.answers["big"] = [f"198.51.100.{i}" for i in range(1, 101)]
    udp_answer = server.ask("big")
    assert w.parse_header(udp_answer).truncated  # the UDP client retries over TCP itself
    (tcp_answer,) = server.tcp(w.build_query(5, "big"))
    assert not w.parse_header(tcp_answer).truncated
    assert len(_addresses(tcp_answer)) == 100
    assert [name for _, name in upstream.tcp_questions] == ["big"]


def test_a_silent_upstream_gives_servfail_after_the_timeout(server: Server,
                                                            upstream: FakeUpstream) -> None:
    upstream.silent = True
    started = time.monotonic()
    answer = server.ask("example.org")
    assert 0.4 < time.monotonic() - started < 3
    assert w.parse_header(answer).rcode == w.RCode.SERVFAIL


def test_a_dead_upstream_is_skipped_for_the_next_one(upstream: FakeUpstream) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"
    server = Server([dead, upstream.address], timeout=2.0)
    try:
        started = time.monotonic()
        answer = server.ask("example.org")
        # ICMP port unreachable fails the first at once, no timeout waited.
        assert time.monotonic() - started < 1.5
        assert _addresses(answer) == ["192.0.2.1"]
    finally:
        server.resolver.close()


def test_an_answer_with_another_id_is_ignored(server: Server, upstream: FakeUpstream) -> None:
    upstream.wrong_id_first = True
    upstream.answers["example.org"] = ["203.0.113.9"]
    assert _addresses(server.ask("example.org")) == ["203.0.113.9"]


def test_no_upstream_or_only_itself_gives_servfail_and_no_loop() -> None:
    server = Server([], timeout=0.3)
    try:
        assert w.parse_header(server.ask("example.org")).rcode == w.RCode.SERVFAIL
        server.resolver.set_upstreams([f"127.0.0.1:{server.udp_port}", "not-an-ip"])
        assert w.parse_header(server.ask("example.org")).rcode == w.RCode.SERVFAIL
    finally:
        server.resolver.close()


def test_a_failing_lookup_gives_servfail_and_the_server_goes_on(server: Server) -> None:
    assert w.parse_header(server.ask("boom")).rcode == w.RCode.SERVFAIL
    assert _addresses(server.ask("web")) == ["172.18.0.2"]


def test_other_opcodes_get_notimp(server: Server) -> None:
    data = bytearray(w.build_query(3, "web"))
    data[2] |= 2 << 3  # opcode 2 (STATUS)
    assert w.parse_header(server.udp(bytes(data))).rcode == w.RCode.NOTIMP


def _udp_retrying(server: Server, data: bytes, tries: int = 10) -> bytes:
    """As a client does: the flood before may have filled the socket's receive buffer on a
    loaded machine (the kernel drops, the client asks again)."""
    for _ in range(tries - 1):
        try:
            return server.udp(data, timeout=1.0)
        except TimeoutError:
            continue
    return server.udp(data)


def test_garbage_gets_formerr_or_nothing_and_never_stops_the_server(server: Server) -> None:
    header_only = struct.pack("!HHHHHH", 77, 0, 1, 0, 0, 0) + b"\x3f"
    assert w.parse_header(server.udp(header_only)).rcode == w.RCode.FORMERR
    # A response is never answered (two resolvers would bounce it forever).
    response = w.build_response(w.parse_query(w.build_query(1, "web")), w.RCode.NOERROR)
    with pytest.raises(TimeoutError):
        server.udp(response, timeout=0.3)
    rng = random.Random(53)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(2000):
            size = rng.choice([0, 1, 11, 12, 13, 40, 512, 4000])
            sock.sendto(bytes(rng.getrandbits(8) for _ in range(size)),
                        ("127.0.0.1", server.udp_port))
    # Loops of compression pointers, and a name of 128 one-byte labels behind pointers.
    loop = struct.pack("!HHHHHH", 9, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    assert w.parse_header(_udp_retrying(server, loop)).rcode == w.RCode.FORMERR
    assert _addresses(server.ask("web")) == ["172.18.0.2"]


def test_tcp_serves_several_queries_per_connection_and_hangs_up_on_garbage(
        server: Server) -> None:
    first, second = server.tcp(w.build_query(1, "web"), w.build_query(2, "gone"))
    assert _addresses(first) == ["172.18.0.2"]
    assert w.parse_header(second).rcode == w.RCode.NXDOMAIN
    with socket.create_connection(("127.0.0.1", server.tcp_port), timeout=5) as sock:
        sock.sendall(b"\x00\x03abc")
        assert sock.recv(100) == b""  # not even a header: closed
    with socket.create_connection(("127.0.0.1", server.tcp_port), timeout=5) as sock:
        sock.sendall(b"\xff\xff" + b"\x00" * 100)
        sock.shutdown(socket.SHUT_WR)  # a length it never sends in full, then EOF
        assert sock.recv(100) == b""
    assert _addresses(server.tcp(w.build_query(3, "web"))[0]) == ["172.18.0.2"]


def test_many_concurrent_clients_are_all_answered(server: Server,
                                                  upstream: FakeUpstream) -> None:
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            for j in range(20):
                name = "web" if j % 2 else f"host{index}.example.org"
                assert w.parse_header(server.ask(name, message_id=j)).rcode == w.RCode.NOERROR
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


def test_listen_is_idempotent_unlisten_stops_and_a_taken_port_raises(server: Server) -> None:
    server.resolver.listen("127.0.0.1", 0)
    assert server.resolver.ports("127.0.0.1") == (server.udp_port, server.tcp_port)
    other = Resolver(server.lookup, [])
    try:
        with pytest.raises(OSError):
            other.listen("127.0.0.1", server.udp_port)
    finally:
        other.close()
    server.resolver.unlisten("127.0.0.1")
    server.resolver.unlisten("127.0.0.1")
    with pytest.raises(KeyError):
        server.resolver.ports("127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", server.udp_port))  # released
    server.resolver.close()
    server.resolver.close()
    with pytest.raises(RuntimeError):
        server.resolver.listen("127.0.0.1", 0)


def test_threads_end_when_the_resolver_closes(upstream: FakeUpstream) -> None:
    before = threading.active_count()
    server = Server([upstream.address])
    server.ask("example.org")
    server.tcp(w.build_query(1, "web"))
    server.resolver.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


@pytest.mark.parametrize("text, parsed", [
    ("1.1.1.1", Upstream("1.1.1.1", 53)),
    ("10.0.0.1:5353", Upstream("10.0.0.1", 5353)),
    ("::1", Upstream("::1", 53)),
    ("[fd00::1]:5300", Upstream("fd00::1", 5300)),
])
def test_upstream_addresses_are_parsed(text: str, parsed: Upstream) -> None:
    assert Upstream.parse(text) == parsed


@pytest.mark.parametrize("text", ["dns.example", "1.1.1.1:0", "1.1.1.1:x", "[::1]:70000"])
def test_bad_upstream_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Upstream.parse(text)
