"""NetworkService's networks over recording fakes: lifecycle, Docker's messages, nothing
half-created on errors, filters and prune, connect and disconnect, events."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pydeskd.containerd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pydeskd.network.driver import Seams
from pydeskd.network.requests import CreateRequest, EndpointRequest, PoolRequest
from pydeskd.network.service import NetworkService
from tests.unit.network.fakes import FakeLinks, fake_seams
from tests.unit.network.world import Events, World, cid


def test_building_the_service_touches_nothing(w: World) -> None:
    assert w.links.bridges == {} and w.firewall.applied == []
    assert {n["Name"] for n in w.svc.list()} == {"bridge", "host", "none"}


def test_default_bridge_avoids_the_hosts_routes(tmp_path: Path) -> None:
    seams = fake_seams()
    assert isinstance(seams.links, FakeLinks)
    seams.links.routes.append(IPv4Network("172.17.0.0/16"))  # a running docker0
    svc = NetworkService(tmp_path / "d", tmp_path / "x", Events(), seams=seams, durable=False,
                         dns=False)
    svc.start()
    bridge = svc.inspect("bridge")
    assert bridge["IPAM"]["Config"] == [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]
    assert seams.links.bridges[svc.names.default_bridge] == ("172.18.0.1", 16)


def test_create_inspect_remove(w: World) -> None:
    net = w.svc.create(CreateRequest("front", labels={"a": "b"}))
    got = w.svc.inspect("front")
    assert got["Id"] == net.id and got["Driver"] == "bridge" and got["Labels"] == {"a": "b"}
    assert got["IPAM"]["Config"][0]["Subnet"] == "172.18.0.0/16"  # bridge took 172.17
    assert net.bridge in w.links.bridges and net.bridge == f"pd-{net.id[:12]}"
    assert net.bridge in {b.bridge for b in w.firewall.applied[-1].bridges}
    w.svc.remove(net.id[:6])
    assert net.bridge not in w.links.bridges
    assert net.bridge not in {b.bridge for b in w.firewall.applied[-1].bridges}
    actions = [(e[0], e[1]) for e in w.events.seen]
    assert actions == [("network", "create"), ("network", "destroy")]


def _state(w: World) -> tuple[Any, ...]:
    return (sorted(n["Name"] for n in w.svc.list()), dict(w.links.bridges),
            sorted(p.name for p in (w.tmp / "data" / "network" / "networks").iterdir()))


@pytest.mark.parametrize(("req", "error", "message"), [
    (CreateRequest("x", pools=()), None, ""),
    (CreateRequest("bad", pools=(
        PoolRequest(
            "300.0.0.0/24"),)), InvalidArgument, "invalid CIDR address: 300.0.0.0/24"),
    (CreateRequest("gw", pools=(
        PoolRequest(
            "10.1.0.0/24", gateway="10.2.0.1"),)), InvalidArgument,
     "no matching subnet for gateway 10.2.0.1"),
    (CreateRequest("rng", pools=(
        PoolRequest(
            "10.1.0.0/24", ip_range="10.1.1.0/25"),)), InvalidArgument,
     "no matching subnet for range 10.1.1.0/25"),
])
def test_bad_input_creates_nothing(w: World, req: CreateRequest, error: type[Exception] | None,
                                   message: str) -> None:
    w.svc.start()
    before = _state(w)
    if error is None:
        w.svc.create(req)
        assert _state(w) != before
        return
    with pytest.raises(error, match=message):
        w.svc.create(req)
    assert _state(w) == before


def test_overlap_and_duplicate_name_create_nothing(w: World) -> None:
    w.svc.create(CreateRequest("a", pools=(PoolRequest("10.9.0.0/16"),)))
    before = _state(w)
    with pytest.raises(FailedPrecondition, match="Pool overlaps with other one on this "
                       "address space"):
        w.svc.create(CreateRequest("b", pools=(PoolRequest("10.9.3.0/24"),)))
    with pytest.raises(AlreadyExists, match="network with name a already exists"):
        w.svc.create(CreateRequest("a"))
    assert _state(w) == before


def test_a_failing_bridge_leaves_no_record(w: World) -> None:
    w.svc.start()
    before = _state(w)

    def broken(name: str, address: str, prefixlen: int) -> None:
        raise OSError("no bridge for you")
    w.links.ensure_bridge = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        w.svc.create(CreateRequest("x"))
    assert _state(w) == before


def test_unknown_and_predefined_networks(w: World) -> None:
    with pytest.raises(NotFound, match="network nope not found"):
        w.svc.inspect("nope")
    with pytest.raises(NotFound, match="network nope not found"):
        w.svc.remove("nope")
    with pytest.raises(FailedPrecondition, match="bridge is a pre-defined network and cannot "
                       "be removed"):
        w.svc.remove("bridge")
    with pytest.raises(NotFound, match="network nope not found"):
        w.svc.register(cid(1), "c1", {"NetworkMode": "nope"})


def test_connect_and_disconnect_running_and_stopped(w: World) -> None:
    net = w.svc.create(CreateRequest("app"))
    w.run(cid(1), "one")
    w.svc.connect("app", "one", EndpointRequest(aliases=("uno",)))
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None and [e.ifname for e in att.active.endpoints] == \
        ["eth0", "eth1"]
    with pytest.raises(FailedPrecondition, match="already exists in network app"):
        w.svc.connect("app", "one", EndpointRequest())
    w.svc.disconnect("app", "one")
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None and len(att.active.endpoints) == 1
    with pytest.raises(FailedPrecondition, match="is not connected to network app"):
        w.svc.disconnect("app", "one")
    w.run(cid(2), "two", {"NetworkMode": "app"})
    with pytest.raises(FailedPrecondition, match="has active endpoints"):
        w.svc.remove("app")
    w.stop(cid(2))
    w.stop(cid(1))
    w.svc.connect("app", "one", EndpointRequest())   # stopped: kept for the next start
    assert w.svc.store.attachments[cid(1)].active is None
    assert w.svc.prune() == []      # a stopped container still uses it
    w.svc.remove("app")             # but only running ones block rm, as in Docker
    with pytest.raises(NotFound, match="not found"):
        w.svc.attach(cid(1), "one", {}, {})
    kinds = [(e[1], e[3].get("container")) for e in w.events.seen if e[2] == net.id]
    assert ("connect", cid(1)) in kinds and ("disconnect", cid(1)) in kinds


def test_list_filters_and_prune(w: World) -> None:
    w.svc.create(CreateRequest("keep", labels={"team": "a"}))
    w.svc.create(CreateRequest("drop"))
    w.svc.create(CreateRequest("used"))
    w.run(cid(1), "c", {"NetworkMode": "used"})
    names = lambda f: sorted(n["Name"] for n in w.svc.list(f))  # noqa: E731
    assert names({"type": ["custom"]}) == ["drop", "keep", "used"]
    assert names({"label": ["team=a"]}) == ["keep"]
    assert names({"dangling": ["true"]}) == ["drop", "keep"]
    assert names({"name": ["ke"]}) == ["keep"]
    with pytest.raises(InvalidArgument):
        w.svc.list({"bogus": ["1"]})
    assert sorted(w.svc.prune({"label": ["team=a"]})) == ["keep"]
    assert sorted(w.svc.prune()) == ["drop"]


def test_seams_default_to_the_real_ones() -> None:
    seams = Seams(host_lock=None)
    assert type(seams.links).__name__ == "PyrouteLinks"


def test_bridge_name_option(w: World) -> None:
    net = w.svc.create(CreateRequest("named", options={
        "com.docker.network.bridge.name": "br-named"}))
    assert net.bridge == "br-named" and "br-named" in w.links.bridges
    with pytest.raises(FailedPrecondition, match="bridge name br-named is already in use"):
        w.svc.create(CreateRequest("again", options={
            "com.docker.network.bridge.name": "br-named"}))
    with pytest.raises(InvalidArgument, match="invalid bridge name"):
        w.svc.create(CreateRequest("long", options={
            "com.docker.network.bridge.name": "x" * 16}))


def test_a_failed_connect_leaves_no_trace(w: World) -> None:
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "one")
    w.links.fail_veth = True
    with pytest.raises(OSError):
        w.svc.connect("app", "one", EndpointRequest())
    att = w.svc.store.attachments[cid(1)]
    assert [c.network_id for c in att.configs] == [w.svc.network("bridge").id]
    assert att.active is not None and len(att.active.endpoints) == 1
    w.links.fail_veth = False
    w.svc.connect("app", "one", EndpointRequest())


def test_leaving_the_first_network_moves_the_default_route(w: World) -> None:
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "one")
    w.svc.connect("app", "one", EndpointRequest())
    w.svc.disconnect("bridge", "one")
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None
    assert w.links.default_routes == {att.active.netns: "172.18.0.1"}


def test_remove_deletes_the_bridge_before_the_record(w: World,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Review #21: a daemon killed between the two must not leave a bridge nobody owns."""
    net = w.svc.create(CreateRequest("front"))
    seen: list[bool] = []
    delete = w.svc.store.delete_network

    def recording_delete(net_id: str) -> None:
        seen.append(net.bridge in w.links.bridges)
        delete(net_id)

    monkeypatch.setattr(w.svc.store, "delete_network", recording_delete)
    w.svc.remove("front")
    assert seen == [False] and net.bridge not in w.links.bridges


def test_a_firewall_failure_at_start_is_retried_with_the_resolver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review #12: an iptables failure (an xtables lock timeout) at start must not leave the
    service started without its rules or its resolver."""
    w = World(tmp_path)
    w.svc.create(CreateRequest("app"))
    w.svc.close()
    svc = NetworkService(tmp_path / "data", tmp_path / "exec", w.events, seams=w.seams,
                         durable=False, dns=True)
    apply = w.firewall.apply
    failures = [FailedPrecondition("iptables: xtables lock timeout")]

    def flaky(ruleset: Any) -> None:
        if failures:
            raise failures.pop()
        apply(ruleset)

    monkeypatch.setattr(w.firewall, "apply", flaky)
    before = len(w.firewall.applied)
    try:
        with pytest.raises(FailedPrecondition):
            svc.start()
        assert not svc.started
        svc.start()
        assert svc.started and len(w.firewall.applied) == before + 1
        pool = svc.network("app").pool
        assert svc.resolver is not None and pool is not None and svc.dns_port(pool.gateway)
    finally:
        svc.close()


def test_the_resolver_has_one_port_not_53_and_the_rules_redirect_53_to_it(
        tmp_path: Path) -> None:
    """Review #9: ``-p 53:53/udp`` must stay possible with user networks."""
    import socket
    w = World(tmp_path)
    svc = NetworkService(tmp_path / "data", tmp_path / "exec", w.events, seams=w.seams,
                         durable=False, dns=True)
    try:
        a = svc.create(CreateRequest("a"))
        b = svc.create(CreateRequest("b"))
        assert a.pool is not None and b.pool is not None
        port = svc.dns_port(a.pool.gateway)
        assert port not in (0, 53) and svc.dns_port(b.pool.gateway) == port
        rules = {r.bridge: r for r in w.firewall.applied[-1].bridges}
        assert (rules[a.bridge].gateway, rules[a.bridge].dns_port) == (a.pool.gateway, port)
        assert (rules[b.bridge].gateway, rules[b.bridge].dns_port) == (b.pool.gateway, port)
        default = rules[svc.default_network().bridge]
        assert default.dns_port == 0
        # Port 53 on the gateway is free for a published port's proxy.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_IP, 15, 1)   # IP_FREEBIND: no bridge in the fakes
            sock.bind((a.pool.gateway, 53))
        # The daemon's port taken on a new gateway: that network gets a free one of its own.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_IP, 15, 1)
            sock.bind(("172.20.0.1", port))
            c = svc.create(CreateRequest("c"))
            assert c.pool is not None and c.pool.gateway == "172.20.0.1"
            other = svc.dns_port(c.pool.gateway)
            assert other not in (0, 53, port)
            rules = {r.bridge: r for r in w.firewall.applied[-1].bridges}
            assert rules[c.bridge].dns_port == other
        svc.remove("a")
        assert svc.dns_port(a.pool.gateway) == 0
    finally:
        svc.close()
