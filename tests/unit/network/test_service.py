"""NetworkService over recording fakes: networks' lifecycle and Docker's messages, nothing
half-created on errors, sandboxes (addresses, ports, proxies), persistence across a restart,
restore, DNS lookups, connect/disconnect and events."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pydeskd.containerd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pydeskd.network.driver import Seams
from pydeskd.network.requests import CreateRequest, EndpointRequest
from pydeskd.network.service import NetworkService
from tests.unit.network.fakes import (
    FakeFirewall,
    FakeLinks,
    FakeNamespaces,
    FakeProxies,
    fake_seams,
)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, dict[str, str]]] = []

    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> None:
        self.seen.append((type, action, actor_id, dict(attributes or {})))


class Containers:
    def __init__(self) -> None:
        self.running: dict[str, str] = {}   # id -> name
        self.known: dict[str, str] = {}

    def network_target(self, ref: str) -> tuple[str, str, bool]:
        for cid, name in self.known.items():
            if ref in (cid, name):
                return cid, name, cid in self.running
        raise NotFound(f"No such container: {ref}")


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.seams = fake_seams()
        self.events = Events()
        self.containers = Containers()
        self.svc = self.open()

    def open(self) -> NetworkService:
        svc = NetworkService(self.tmp / "data", self.tmp / "exec", self.events,
                             seams=self.seams, durable=False, dns=False)
        svc.bind_containers(self.containers)
        return svc

    @property
    def links(self) -> FakeLinks:
        assert isinstance(self.seams.links, FakeLinks)
        return self.seams.links

    @property
    def firewall(self) -> FakeFirewall:
        assert isinstance(self.seams.firewall, FakeFirewall)
        return self.seams.firewall

    @property
    def proxies(self) -> FakeProxies:
        assert isinstance(self.seams.proxies, FakeProxies)
        return self.seams.proxies

    @property
    def namespaces(self) -> FakeNamespaces:
        assert isinstance(self.seams.namespaces, FakeNamespaces)
        return self.seams.namespaces

    def run(self, cid: str, name: str, host: dict[str, Any] | None = None,
            networking: dict[str, Any] | None = None,
            config: dict[str, Any] | None = None) -> Any:
        self.containers.known[cid] = name
        self.svc.register(cid, name, host or {}, networking)
        info = self.svc.attach(cid, name, host or {}, config or {})
        self.containers.running[cid] = name
        return info

    def stop(self, cid: str) -> None:
        self.svc.detach(cid)
        self.containers.running.pop(cid, None)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    yield World(tmp_path)


def cid(n: int) -> str:
    return f"c{n:03x}".ljust(64, "b")


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
        __import__("pydeskd.network.requests", fromlist=["PoolRequest"]).PoolRequest(
            "300.0.0.0/24"),)), InvalidArgument, "invalid CIDR address: 300.0.0.0/24"),
    (CreateRequest("gw", pools=(
        __import__("pydeskd.network.requests", fromlist=["PoolRequest"]).PoolRequest(
            "10.1.0.0/24", gateway="10.2.0.1"),)), InvalidArgument,
     "no matching subnet for gateway 10.2.0.1"),
    (CreateRequest("rng", pools=(
        __import__("pydeskd.network.requests", fromlist=["PoolRequest"]).PoolRequest(
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
    from pydeskd.network.requests import PoolRequest
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


def test_addresses_are_unique_given_back_and_survive_a_restart(w: World) -> None:
    one = w.run(cid(1), "one")
    two = w.run(cid(2), "two")
    assert one.hosts[0][0] == "172.17.0.2" and two.hosts[0][0] == "172.17.0.3"
    assert one.nameservers is None  # the default bridge: the host's resolv.conf
    w.stop(cid(1))
    assert w.run(cid(3), "three").hosts[0][0] == "172.17.0.2"  # given back, reused
    # A new daemon over the same files (kill -9: nothing was closed) hands out the next one.
    w.svc = w.open()
    assert w.run(cid(4), "four").hosts[0][0] == "172.17.0.4"


def test_restore_gives_back_what_dead_tasks_held(w: World) -> None:
    w.run(cid(1), "one", {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}})
    w.run(cid(2), "two")
    w.svc = w.open()
    w.svc.restore(running={cid(2)})   # one died while the daemon was down
    assert w.proxies.running == {}
    assert list(w.namespaces.live) == [str(w.svc.names.netns(cid(2)))]
    assert w.run(cid(3), "three").hosts[0][0] == "172.17.0.2"


def test_restore_restarts_dead_proxies_of_running_containers(w: World) -> None:
    w.run(cid(1), "one", {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}})
    w.proxies.running.clear()  # the proxy died
    w.svc = w.open()
    w.svc.restore(running={cid(1)})
    assert [m.host_port for m in w.proxies.running.values()] == [18080]


def test_a_taken_port_fails_before_start_and_leaves_nothing(w: World) -> None:
    w.proxies.busy.add(18080)
    host = {"PortBindings": {"81/tcp": [{"HostPort": "18081"}],
                             "80/tcp": [{"HostPort": "18080"}]}}
    w.containers.known[cid(1)] = "one"
    w.svc.register(cid(1), "one", host)
    with pytest.raises(FailedPrecondition, match=r"Bind for 0\.0\.0\.0:18080 failed: port is "
                       "already allocated"):
        w.svc.attach(cid(1), "one", host, {})
    assert w.proxies.running == {} and w.links.veths == {} and w.namespaces.live == set()
    assert w.svc.store.attachments[cid(1)].active is None


def test_ephemeral_ports_and_settings(w: World) -> None:
    host = {"PortBindings": {"80/tcp": [{"HostPort": ""}]}}
    w.run(cid(1), "one", host, config={"ExposedPorts": {"80/tcp": {}}})
    settings = w.svc.settings(cid(1), {"ExposedPorts": {"80/tcp": {}}})
    port = int(settings["Ports"]["80/tcp"][0]["HostPort"])
    assert 32768 <= port <= 60999
    assert settings["IPAddress"] == "172.17.0.2"
    assert settings["MacAddress"] == "02:42:ac:11:00:02"
    assert settings["Networks"]["bridge"]["Gateway"] == "172.17.0.1"
    rule = w.firewall.applied[-1].ports[0]
    assert (rule.host_port, rule.container_ip, rule.container_port) == (port, "172.17.0.2", 80)


def test_user_network_dns_aliases_and_isolation(w: World) -> None:
    net = w.svc.create(CreateRequest("app"))
    other = w.svc.create(CreateRequest("other"))
    info = w.run(cid(1), "db", {"NetworkMode": "app"},
                 {"EndpointsConfig": {"app": {"Aliases": ["database"]}}})
    assert info.nameservers == (net.pool.gateway,) if net.pool else False
    w.run(cid(2), "web", {"NetworkMode": "app"})
    w.run(cid(3), "spy", {"NetworkMode": "other"})
    web_ip = w.svc.store.attachments[cid(2)].active.endpoints[0].address  # type: ignore[union-attr]
    spy_ip = w.svc.store.attachments[cid(3)].active.endpoints[0].address  # type: ignore[union-attr]
    assert w.svc.lookup(web_ip, "db") == ["172.18.0.2"]
    assert w.svc.lookup(web_ip, "DATABASE.") == ["172.18.0.2"]
    assert w.svc.lookup(web_ip, cid(1)[:12]) == ["172.18.0.2"]
    assert w.svc.lookup(web_ip, "example.com") is None
    assert w.svc.lookup(spy_ip, "db") is None
    assert other.pool is not None and spy_ip.startswith("172.19.")


def test_static_ip_and_aliases_need_a_user_network(w: World) -> None:
    with pytest.raises(InvalidArgument, match="user specified IP address is supported on user "
                       "defined networks only"):
        w.svc.register(cid(1), "c", {}, {"EndpointsConfig": {"bridge": {
            "IPAMConfig": {"IPv4Address": "172.17.0.9"}}}})
    with pytest.raises(InvalidArgument, match="network-scoped alias is supported only"):
        w.svc.register(cid(1), "c", {}, {"EndpointsConfig": {"bridge": {"Aliases": ["x"]}}})
    w.svc.create(CreateRequest("app"))
    info = w.run(cid(2), "c2", {"NetworkMode": "app"}, {"EndpointsConfig": {"app": {
        "IPAMConfig": {"IPv4Address": "172.18.0.50"}}}})
    assert info.hosts[0][0] == "172.18.0.50"


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


def test_forget_frees_static_addresses_and_network(w: World) -> None:
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "one", {"NetworkMode": "app"})
    w.svc.forget(cid(1))
    assert w.links.veths == {} and w.namespaces.live == set()
    w.svc.remove("app")


def test_host_none_and_container_modes(w: World) -> None:
    assert w.run(cid(1), "h", {"NetworkMode": "host"}).host_mode
    none = w.run(cid(2), "n", {"NetworkMode": "none"})
    assert none.netns and none.hosts == ()
    main = w.run(cid(3), "main")
    side = w.run(cid(4), "side", {"NetworkMode": f"container:{cid(3)}"})
    assert side.netns == main.netns
    w.stop(cid(3))
    w.containers.known[cid(5)] = "late"
    w.svc.register(cid(5), "late", {"NetworkMode": f"container:{cid(3)}"})
    with pytest.raises(FailedPrecondition, match="non running container"):
        w.svc.attach(cid(5), "late", {"NetworkMode": f"container:{cid(3)}"}, {})


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


def test_a_failing_veth_leaves_nothing(w: World) -> None:
    w.links.fail_veth = True
    w.containers.known[cid(1)] = "c"
    w.svc.register(cid(1), "c", {})
    with pytest.raises(OSError):
        w.svc.attach(cid(1), "c", {}, {})
    assert w.namespaces.live == set() and w.svc.store.attachments[cid(1)].active is None
    w.links.fail_veth = False
    assert w.run(cid(2), "d").hosts[0][0] == "172.17.0.2"


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


def test_host_resolv_keeps_loopback_servers_and_search(tmp_path: Path) -> None:
    from pydeskd.network.service_dns import host_resolv
    conf = tmp_path / "resolv.conf"
    conf.write_text("# c\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch a.example b\n")
    assert host_resolv(conf) == (["127.0.0.53", "10.0.0.2"], ["a.example", "b"])
    assert host_resolv(tmp_path / "missing") == (["8.8.8.8", "8.8.4.4"], [])


def test_a_failing_firewall_undoes_the_sandbox(w: World) -> None:
    w.svc.start()

    def broken(ruleset: object) -> None:
        raise RuntimeError("iptables-restore failed (fake)")
    w.containers.known[cid(1)] = "c"
    w.svc.register(cid(1), "c", {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}})
    w.firewall.apply = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        w.svc.attach(cid(1), "c", {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}}, {})
    assert w.proxies.running == {} and w.links.veths == {} and w.namespaces.live == set()
    assert w.svc.store.attachments[cid(1)].active is None


def test_container_mode_needs_an_existing_container(w: World) -> None:
    with pytest.raises(NotFound, match="No such container: ghost"):
        w.svc.register(cid(1), "c", {"NetworkMode": "container:ghost"})
    assert cid(1) not in w.svc.store.attachments


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
