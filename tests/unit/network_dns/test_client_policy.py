"""The resolver's per-client policy (review #5, #6, #15) and its one port for UDP and TCP
(review #9), on 127.0.0.1 random ports against fake upstreams."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pydeskd.network import dns_wire as w
from pydeskd.network.dns import ClientPolicy, Resolver
from pydeskd.network.dns_forward import Upstream
from tests.unit.network_dns.fake_upstream import FakeUpstream
from tests.unit.network_dns.test_resolver import Server, _addresses


class PolicyServer(Server):
    """A Server whose client check answers from ``policies`` (missing: refused)."""

    def __init__(self, upstreams: list[str]) -> None:
        self.policies: dict[str, ClientPolicy] = {}
        self.checked: list[str] = []
        super().__init__(upstreams, timeout=0.5, client=self.client)

    def client(self, client_ip: str) -> ClientPolicy | None:
        self.checked.append(client_ip)
        return self.policies.get(client_ip)


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    default, own = FakeUpstream(), FakeUpstream()
    yield default, own
    default.close()
    own.close()


@pytest.fixture
def server(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[PolicyServer]:
    made = PolicyServer([upstreams[0].address])
    yield made
    made.resolver.close()


def test_a_client_the_check_does_not_know_is_refused_and_nothing_is_looked_up(
        server: PolicyServer, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    for name in ("web", "example.org"):
        answer = server.ask(name)
        assert w.parse_header(answer).rcode == w.RCode.REFUSED
        assert _addresses(answer) == []
    (answer,) = server.tcp(w.build_query(7, "example.org"))
    assert w.parse_header(answer).rcode == w.RCode.REFUSED
    assert server.calls == [] and upstreams[0].udp_questions == []
    assert server.checked and set(server.checked) == {"127.0.0.1"}


def test_no_forwarding_gives_nxdomain_for_other_names_but_answers_ours(
        server: PolicyServer, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    server.policies["127.0.0.1"] = ClientPolicy(forward=False)
    upstreams[0].answers["example.org"] = ["203.0.113.9"]
    assert _addresses(server.ask("web")) == ["172.18.0.2"]
    answer = server.ask("example.org")
    assert w.parse_header(answer).rcode == w.RCode.NXDOMAIN
    (answer,) = server.tcp(w.build_query(8, "example.org"))
    assert w.parse_header(answer).rcode == w.RCode.NXDOMAIN
    assert upstreams[0].udp_questions == []


def test_a_clients_own_upstreams_replace_the_resolvers(
        server: PolicyServer, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    default, own = upstreams
    default.answers["example.org"] = ["203.0.113.1"]
    own.answers["example.org"] = ["203.0.113.2"]
    server.policies["127.0.0.1"] = ClientPolicy()
    assert _addresses(server.ask("example.org")) == ["203.0.113.1"]
    server.policies["127.0.0.1"] = ClientPolicy(upstreams=(Upstream.parse(own.address),))
    assert _addresses(server.ask("example.org")) == ["203.0.113.2"]
    (answer,) = server.tcp(w.build_query(9, "example.org"))
    assert _addresses(answer) == ["203.0.113.2"]
    assert [n for _, n in default.udp_questions] == ["example.org"]


def test_port_zero_is_one_free_port_for_udp_and_tcp() -> None:
    resolver = Resolver(lambda ip, name: None, [])
    try:
        port = resolver.listen("127.0.0.1", 0)
        assert port != 0 and resolver.ports("127.0.0.1") == (port, port)
        assert resolver.listen("127.0.0.1", 0) == port  # already served: the same
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
    finally:
        resolver.close()
