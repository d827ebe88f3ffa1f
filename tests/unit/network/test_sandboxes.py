"""NetworkService's container side over recording fakes: sandboxes (addresses, ports,
proxies), persistence across a restart, restore, DNS lookups, network modes, rollbacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument, NotFound
from pydeskd.network.requests import CreateRequest, EndpointRequest
from tests.unit.network.world import World, cid


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
    # (The fake proxies word it from the mapping, whose HostIp "" is every address; the real
    # ones say 0.0.0.0: test_families.py.)
    with pytest.raises(FailedPrecondition, match=r"Bind for 0\.0\.0\.0:18080 failed: port "
                       "is already allocated"):
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


def test_a_failing_veth_leaves_nothing(w: World) -> None:
    w.links.fail_veth = True
    w.containers.known[cid(1)] = "c"
    w.svc.register(cid(1), "c", {})
    with pytest.raises(OSError):
        w.svc.attach(cid(1), "c", {}, {})
    assert w.namespaces.live == set() and w.svc.store.attachments[cid(1)].active is None
    w.links.fail_veth = False
    assert w.run(cid(2), "d").hosts[0][0] == "172.17.0.2"


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


def test_links_add_hosts_lines_for_running_containers(w: World) -> None:
    w.run(cid(1), "db")
    info = w.run(cid(2), "web", {"Links": ["/db:/web/database"]})
    assert info.hosts[1] == ("172.17.0.2", ("database", "db", cid(1)[:12]))
    w.stop(cid(1))
    w.containers.known[cid(3)] = "late"
    w.svc.register(cid(3), "late", {"Links": ["db:x"]})
    with pytest.raises(FailedPrecondition, match="Cannot link to a non running container"):
        w.svc.attach(cid(3), "late", {"Links": ["db:x"]}, {})
    assert w.svc.store.attachments[cid(3)].active is None


def test_containers_without_ports_cost_no_firewall_run(w: World) -> None:
    w.svc.start()
    before = len(w.firewall.applied)
    w.run(cid(1), "plain")
    w.stop(cid(1))
    assert len(w.firewall.applied) == before
    w.run(cid(2), "web", {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}})
    w.stop(cid(2))
    assert len(w.firewall.applied) == before + 2   # its rules came, and went


def test_starts_without_published_ports_apply_no_firewall_change(w: World) -> None:
    w.run(cid(1), "one")
    applied = len(w.firewall.applied)
    w.run(cid(2), "two")
    w.stop(cid(2))
    assert len(w.firewall.applied) == applied  # the same ruleset: not applied again
    w.run(cid(3), "three", {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}})
    assert len(w.firewall.applied) == applied + 1
    assert [p.host_port for p in w.firewall.applied[-1].ports] == [18080]
    w.stop(cid(3))
    assert len(w.firewall.applied) == applied + 2 and w.firewall.applied[-1].ports == ()


def test_container_mode_shares_the_joined_containers_resolver_and_hosts(w: World) -> None:
    # Review finding 14: names on X's user network resolve in --network container:X.
    net = w.svc.create(CreateRequest("app"))
    main = w.run(cid(1), "main", {"NetworkMode": "app"})
    side = w.run(cid(2), "side", {"NetworkMode": f"container:{cid(1)}"})
    assert net.pool is not None
    assert side.netns == main.netns
    assert side.nameservers == (net.pool.gateway,)
    assert side.hosts[0][0] == main.hosts[0][0] and "main" in side.hosts[0][1]


def test_ports_on_internal_networks_only_are_not_published(w: World) -> None:
    # Review finding 18: Docker publishes nothing without an endpoint that has a way out.
    w.svc.create(CreateRequest("sealed", internal=True))
    host = {"NetworkMode": "sealed", "PortBindings": {"80/tcp": [{"HostPort": "18080"}]}}
    w.run(cid(1), "one", host)
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None and att.active.ports == ()
    assert w.proxies.running == {}
    settings = w.svc.settings(cid(1), {})
    assert not settings["Ports"]


def test_leaving_the_first_network_publishes_the_ports_on_the_next(w: World) -> None:
    # Review finding 19: the ports follow the endpoint that is now first.
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "one", {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}})
    w.svc.connect("app", "one", EndpointRequest())
    w.svc.disconnect("bridge", "one")
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None
    assert [m.host_port for m in att.active.ports] == [18080]
    assert [m.host_port for m in w.proxies.running.values()] == [18080]
    rule = w.firewall.applied[-1].ports[0]
    assert (rule.host_port, rule.container_ip) == (18080, att.active.endpoints[0].address)
    w.svc.disconnect("app", "one")  # nothing left to publish on
    assert w.proxies.running == {}


def test_restore_drops_endpoints_whose_veth_never_came(w: World) -> None:
    # Review finding 23: kill -9 between recording a connect's endpoint and its veth.
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "one")
    w.svc.connect("app", "one", EndpointRequest(ipv4=""))
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None
    phantom = att.active.endpoints[1]
    del w.links.veths[phantom.host_veth]
    w.svc = w.open()
    w.svc.restore(running={cid(1)})
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None and len(att.active.endpoints) == 1
    assert [c.network_id for c in att.configs] == [w.svc.network("bridge").id]
    assert phantom.address not in w.svc.store.addresses_in_use(phantom.network_id)


def test_restore_moves_ports_off_a_first_endpoint_whose_veth_is_gone(w: World) -> None:
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "one", {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}})
    w.svc.connect("app", "one", EndpointRequest())
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None
    del w.links.veths[att.active.endpoints[0].host_veth]
    w.svc = w.open()
    w.svc.restore(running={cid(1)})
    att = w.svc.store.attachments[cid(1)]
    assert att.active is not None and [e.network_id for e in att.active.endpoints] == [
        w.svc.network("app").id]
    assert [m.host_port for m in att.active.ports] == [18080]
    assert w.firewall.applied[-1].ports[0].container_ip == att.active.endpoints[0].address


@pytest.mark.parametrize("host_ip", ["999.1.1.1", "../../etc", "not-an-ip"])
def test_a_bad_host_ip_is_refused_at_create(w: World, host_ip: str) -> None:
    host = {"PortBindings": {"80/tcp": [{"HostIp": host_ip, "HostPort": "18080"}]}}
    with pytest.raises(InvalidArgument, match="invalid IP address"):
        w.svc.register(cid(1), "one", host)
    assert cid(1) not in w.svc.store.attachments
