"""NetworkService's side of the embedded resolver over the fakes (review #1, #5, #6, #9, #13,
#15, #16): whom it answers, from which networks, where it forwards, without the service's
lock, and the host's resolv.conf followed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydeskd.network.dns import Resolver
from pydeskd.network.dns_forward import Upstream
from pydeskd.network.requests import CreateRequest
from pydeskd.network.service_dns import HostResolvWatch
from tests.unit.network.world import World, cid


def _ip(w: World, n: int, net_name: str = "") -> str:
    att = w.svc.store.attachments[cid(n)]
    assert att.active is not None
    if not net_name:
        return att.active.endpoints[0].address
    net = w.svc.network(net_name)
    ep = att.active.endpoint(net.id)
    assert ep is not None
    return ep.address


def test_a_container_on_two_networks_resolves_names_on_both(w: World) -> None:
    w.svc.create(CreateRequest("front"))
    w.svc.create(CreateRequest("back"))
    w.run(cid(1), "proxy", {"NetworkMode": "front"},
          {"EndpointsConfig": {"front": {}, "back": {}}})
    w.run(cid(2), "web", {"NetworkMode": "front"})
    w.run(cid(3), "db", {"NetworkMode": "back"}, {"EndpointsConfig": {"back": {
        "Aliases": ["database"]}}})
    for asked_from in (_ip(w, 1, "front"), _ip(w, 1, "back")):
        assert w.svc.lookup(asked_from, "web") == [_ip(w, 2)]
        assert w.svc.lookup(asked_from, "database") == [_ip(w, 3)]
    # The others still see only their own network.
    assert w.svc.lookup(_ip(w, 2), "db") is None
    assert w.svc.lookup(_ip(w, 3), "web") is None
    assert w.svc.lookup(_ip(w, 3), "proxy") == [_ip(w, 1, "back")]


def test_a_network_connected_while_running_is_resolved_at_once(w: World) -> None:
    from pydeskd.network.requests import EndpointRequest
    w.svc.create(CreateRequest("front"))
    w.svc.create(CreateRequest("back"))
    w.run(cid(1), "proxy", {"NetworkMode": "front"})
    w.run(cid(3), "db", {"NetworkMode": "back"})
    assert w.svc.lookup(_ip(w, 1), "db") is None
    w.svc.connect("back", cid(1), EndpointRequest())
    assert w.svc.lookup(_ip(w, 1), "db") == [_ip(w, 3)]
    w.svc.disconnect("back", cid(1))
    assert w.svc.lookup(_ip(w, 1), "db") is None
    w.stop(cid(3))
    w.svc.connect("back", cid(1), EndpointRequest())
    assert w.svc.lookup(_ip(w, 1), "db") is None


def test_only_known_container_endpoints_are_answered(w: World) -> None:
    net = w.svc.create(CreateRequest("app"))
    w.run(cid(1), "web", {"NetworkMode": "app"})
    w.run(cid(2), "plain", {})   # the default bridge: no embedded resolver there
    assert net.pool is not None
    for stranger in ("192.168.1.50", net.pool.gateway, "172.18.0.99", _ip(w, 2), "::1",
                     "not an address"):
        assert w.svc.client(stranger) is None, stranger
    policy = w.svc.client(_ip(w, 1))
    assert policy is not None and policy.forward and policy.upstreams == ()
    w.stop(cid(1))
    assert w.svc.client("172.18.0.2") is None


def test_containers_on_internal_networks_only_get_no_forwarding(w: World) -> None:
    w.svc.create(CreateRequest("sealed", internal=True))
    w.svc.create(CreateRequest("open"))
    w.run(cid(1), "inside", {"NetworkMode": "sealed"})
    w.run(cid(2), "both", {"NetworkMode": "sealed"},
          {"EndpointsConfig": {"sealed": {}, "open": {}}})
    inside = w.svc.client(_ip(w, 1))
    assert inside is not None and not inside.forward
    both = w.svc.client(_ip(w, 2, "sealed"))
    assert both is not None and both.forward   # it has a way out anyway
    assert w.svc.lookup(_ip(w, 1), "both") == [_ip(w, 2, "sealed")]


def test_a_containers_dns_servers_are_its_upstreams(w: World) -> None:
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "web", {"NetworkMode": "app", "Dns": ["9.9.9.9", "[2001:db8::1]:5353"]})
    w.run(cid(2), "db", {"NetworkMode": "app"})
    policy = w.svc.client(_ip(w, 1))
    assert policy is not None
    assert policy.upstreams == (Upstream("9.9.9.9"), Upstream("2001:db8::1", 5353))
    other = w.svc.client(_ip(w, 2))
    assert other is not None and other.upstreams == ()
    w.svc.forget(cid(1))
    assert cid(1) not in w.svc._dns_servers


def test_lookups_do_not_wait_for_the_services_lock(w: World) -> None:
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "web", {"NetworkMode": "app"})
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with w.svc.lock:     # as a container start does through proxies and iptables
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        answers: list[object] = []
        asker = threading.Thread(target=lambda: answers.extend([
            w.svc.lookup(_ip(w, 1), "web"), w.svc.client(_ip(w, 1))]))
        asker.start()
        asker.join(2)
        assert not asker.is_alive(), "a lookup waited for the service's lock"
        assert answers[0] == [_ip(w, 1)] and answers[1] is not None
    finally:
        release.set()
        holder.join()


def test_the_host_resolv_conf_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\nsearch corp.example\n")
    now = [100.0]
    watch = HostResolvWatch(path, interval=3.0, monotonic=lambda: now[0])
    resolver = Resolver(lambda ip, name: None, [])
    try:
        watch.load(resolver)
        assert resolver._upstreams == (Upstream("192.0.2.1"),)
        path.write_text("nameserver 198.51.100.7\nnameserver 198.51.100.8\n")
        os.utime(path, ns=(1, 1))    # a different mtime even on a coarse clock
        assert not watch.check(resolver)           # too soon: not even a stat
        now[0] += 3.5
        assert watch.check(resolver)
        assert resolver._upstreams == (Upstream("198.51.100.7"), Upstream("198.51.100.8"))
        assert resolver._search == ()
        now[0] += 3.5
        assert not watch.check(resolver)           # unchanged: not reread
    finally:
        resolver.close()


def test_the_service_checks_the_host_resolv_conf_on_queries(w: World, tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    now = [0.0]
    w.svc._resolv_watch = HostResolvWatch(path, interval=1.0, monotonic=lambda: now[0])
    resolver = Resolver(w.svc.lookup, [], client=w.svc.client)
    w.svc.resolver = resolver
    try:
        w.svc._resolv_watch.load(resolver)
        path.write_text("nameserver 192.0.2.2\n")
        os.utime(path, ns=(1, 1))
        now[0] = 2.0
        w.svc.client("192.168.1.1")
        assert resolver._upstreams == (Upstream("192.0.2.2"),)
    finally:
        w.svc.resolver = None
        resolver.close()


def test_a_containers_dns_servers_survive_a_daemon_restart(w: World) -> None:
    """Live restore: a running container keeps its --dns servers as upstreams."""
    w.svc.create(CreateRequest("app"))
    w.run(cid(1), "web", {"NetworkMode": "app", "Dns": ["9.9.9.9"]})
    w.svc.close()
    again = w.open()
    policy = again.client(_ip(w, 1))
    assert policy is not None and policy.upstreams == (Upstream("9.9.9.9"),)
    again.forget(cid(1))
    assert w.open()._dns_servers == {}


def test_ps_inspect_and_stats_views_do_not_wait_for_the_services_lock(w: World) -> None:
    """Review #13: ``docker ps`` and ``inspect`` during a long start (proxies, iptables)."""
    w.svc.create(CreateRequest("app"))
    config = {"ExposedPorts": {"80/tcp": {}}}
    w.run(cid(1), "web", {"NetworkMode": "app", "PortBindings": {"80/tcp": [{}]}},
          config=config)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with w.svc.lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.extend([
            w.svc.summary(cid(1), config), w.svc.settings(cid(1), config),
            w.svc.interfaces(cid(1))]))
        reader.start()
        reader.join(2)
        assert not reader.is_alive(), "a view waited for the service's lock"
        ports, networks = got[0]  # type: ignore[misc]
        assert ports[0]["PrivatePort"] == 80 and "app" in networks["Networks"]
        assert got[1]["Networks"]["app"]["IPAddress"] == _ip(w, 1)  # type: ignore[index]
        assert list(got[2]) == ["eth0"]  # type: ignore[call-overload]
    finally:
        release.set()
        holder.join()
