"""The forwards a container needs: every HostIp rule, -P, udp, several bindings, stopped ones;
a label that does not agree with the container's port bindings (an image's) never widens."""

from __future__ import annotations

import json
from typing import Any

from pydesk.forward.desired import (
    HOST_PORT_BINDINGS_LABEL,
    ContainerForwards,
    Forward,
    Proto,
    container_forwards,
    desired_forwards,
    trusted_bindings,
)
from pydesk.proxy.rewrite import rewrite_create

GUEST_AS_PROXY_SENT = object()


def inspect(ports: dict[str, Any], label: dict[str, Any] | None = None, *, running: bool = True,
            name: str = "web", port_bindings: Any = GUEST_AS_PROXY_SENT) -> dict[str, Any]:
    """An inspect answer; by default the container's HostConfig.PortBindings are what the
    proxy sent the guest for ``label`` (the user's bindings), as for a create through it."""
    labels = {} if label is None else {HOST_PORT_BINDINGS_LABEL: json.dumps(label)}
    if port_bindings is GUEST_AS_PROXY_SENT:
        sent = rewrite_create({"HostConfig": {"PortBindings": label or {}}}, None)
        port_bindings = sent["HostConfig"]["PortBindings"]
    return {"Id": "abc123" * 4, "Name": f"/{name}", "State": {"Running": running},
            "Config": {"Labels": labels}, "HostConfig": {"PortBindings": port_bindings},
            "NetworkSettings": {"Ports": ports}}


def bound(*ports: int, ip: str = "0.0.0.0") -> list[dict[str, str]]:
    return [{"HostIp": ip, "HostPort": str(p)} for p in ports]


def rules(c: ContainerForwards) -> set[tuple[str, str, int, int]]:
    return {(str(f.proto), f.host_ip, f.host_port, f.guest_port) for f in c.forwards}


def test_no_label_means_loopback() -> None:
    c = container_forwards(inspect({"80/tcp": bound(8080)}))
    assert rules(c) == {("tcp", "127.0.0.1", 8080, 8080)}
    (f,) = c.forwards
    assert (f.container, f.container_port) == ("web", "80/tcp")
    assert f.describe() == "127.0.0.1:8080 -> 80/tcp (web)"


def test_empty_or_absent_host_ip_is_loopback_never_all_interfaces() -> None:
    label = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "81/tcp": [{"HostPort": "8081"}]}
    c = container_forwards(inspect({"80/tcp": bound(8080), "81/tcp": bound(8081)}, label))
    assert rules(c) == {("tcp", "127.0.0.1", 8080, 8080), ("tcp", "127.0.0.1", 8081, 8081)}


def test_explicit_all_interfaces_and_explicit_address() -> None:
    label = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
             "81/tcp": [{"HostIp": "192.168.7.9", "HostPort": "8081"}]}
    c = container_forwards(inspect({"80/tcp": bound(8080), "81/tcp": bound(8081)}, label))
    assert rules(c) == {("tcp", "0.0.0.0", 8080, 8080), ("tcp", "192.168.7.9", 8081, 8081)}
    assert c.warnings == ()


def test_ipv6_host_address_is_skipped_with_a_warning() -> None:
    label = {"80/tcp": [{"HostIp": "::", "HostPort": "8080"}],
             "81/tcp": [{"HostIp": "[::1]", "HostPort": "8081"}],
             "82/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8082"}]}
    c = container_forwards(inspect(
        {"80/tcp": bound(8080), "81/tcp": bound(8081), "82/tcp": bound(8082)}, label))
    assert rules(c) == {("tcp", "127.0.0.1", 8082, 8082)}
    assert len(c.warnings) == 2
    assert "container web's 80/tcp is not forwarded to :: port 8080" in c.warnings[0]
    assert "IPv4" in c.warnings[0]
    assert "::1" in c.warnings[1]


def test_publish_all_uses_the_ports_the_guest_bound() -> None:
    # -P: no PortBindings at all, the guest picked ephemeral ports.
    ports = {"80/tcp": bound(32768), "443/tcp": bound(32769), "9000/tcp": None}
    c = container_forwards(inspect(ports, {}))
    assert rules(c) == {("tcp", "127.0.0.1", 32768, 32768), ("tcp", "127.0.0.1", 32769, 32769)}


def test_ephemeral_host_port_keeps_the_users_address() -> None:
    label = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": ""}]}
    c = container_forwards(inspect({"80/tcp": bound(40001)}, label))
    assert rules(c) == {("tcp", "0.0.0.0", 40001, 40001)}


def test_udp_and_tcp_of_the_same_port() -> None:
    label = {"53/udp": [{"HostIp": "", "HostPort": "5353"}],
             "53/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}]}
    c = container_forwards(inspect({"53/udp": bound(5353), "53/tcp": bound(5353)}, label))
    assert rules(c) == {("udp", "127.0.0.1", 5353, 5353), ("tcp", "0.0.0.0", 5353, 5353)}
    assert {f.proto for f in c.forwards} == {Proto.UDP, Proto.TCP}


def test_several_bindings_of_one_port() -> None:
    # -p 127.0.0.1:8080:80 -p 0.0.0.0:9090:80 -p 80 (ephemeral, no address)
    label = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"},
                        {"HostIp": "0.0.0.0", "HostPort": "9090"},
                        {"HostIp": "", "HostPort": ""}]}
    c = container_forwards(inspect({"80/tcp": bound(8080, 9090, 33000)}, label))
    assert rules(c) == {("tcp", "127.0.0.1", 8080, 8080), ("tcp", "0.0.0.0", 9090, 9090),
                        ("tcp", "127.0.0.1", 33000, 33000)}


def test_guest_lists_ipv4_and_ipv6_of_one_port_once() -> None:
    ports = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                        {"HostIp": "::", "HostPort": "8080"}]}
    c = container_forwards(inspect(ports, {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}))
    assert rules(c) == {("tcp", "127.0.0.1", 8080, 8080)}


def test_host_port_range_matches_the_port_picked() -> None:
    label = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8000-8010"}]}
    c = container_forwards(inspect({"80/tcp": bound(8004)}, label))
    assert rules(c) == {("tcp", "0.0.0.0", 8004, 8004)}


def test_stopped_container_has_no_forwards() -> None:
    assert container_forwards(inspect({"80/tcp": bound(8080)}, running=False)) == \
        ContainerForwards()
    assert container_forwards({"State": {}, "Name": "/x"}) == ContainerForwards()


def test_unreadable_label_counts_as_absent() -> None:
    data = inspect({"80/tcp": bound(8080)})
    data["Config"]["Labels"][HOST_PORT_BINDINGS_LABEL] = "{not json"
    assert rules(container_forwards(data)) == {("tcp", "127.0.0.1", 8080, 8080)}


def test_sctp_is_warned_about() -> None:
    c = container_forwards(inspect({"80/sctp": bound(8080)}))
    assert c.forwards == frozenset()
    assert "TCP and UDP only" in c.warnings[0]


def test_label_key_without_protocol_is_tcp() -> None:
    c = container_forwards(inspect({"80/tcp": bound(8080)},
                                   {"80": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}))
    assert rules(c) == {("tcp", "0.0.0.0", 8080, 8080)}


def test_forward_equality_ignores_the_names_and_json_round_trips() -> None:
    a = Forward(Proto.TCP, "127.0.0.1", 8080, 8080, "web", "80/tcp")
    b = Forward(Proto.TCP, "127.0.0.1", 8080, 8080)
    assert a == b and hash(a) == hash(b)
    assert Forward.from_json(a.to_json()).container == "web"


def test_desired_is_the_union() -> None:
    one = container_forwards(inspect({"80/tcp": bound(8080)}, name="a"))
    two = container_forwards(inspect({"80/tcp": bound(8081)}, name="b"))
    assert {f.host_port for f in desired_forwards([one, two])} == {8080, 8081}


# --- finding 4: an image's label must not widen a forward ------------------------------------

EVIL = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": ""}]}


def test_image_label_does_not_widen_publish_all() -> None:
    # docker run -P evil/image with LABEL dev.pydesk.host-port-bindings=EVIL (no proxy stamp,
    # the guest merged the image's label): PortBindings {} -> loopback, and the user is told.
    c = container_forwards(inspect({"80/tcp": bound(32768)}, EVIL, port_bindings={}))
    assert rules(c) == {("tcp", "127.0.0.1", 32768, 32768)}
    assert len(c.warnings) == 1
    assert "80/tcp is forwarded on 127.0.0.1 only" in c.warnings[0]
    assert "does not match" in c.warnings[0]
    # no HostConfig at all (an old daemon's answer): the same
    data = inspect({"80/tcp": bound(32768)}, EVIL)
    del data["HostConfig"]
    assert rules(container_forwards(data)) == {("tcp", "127.0.0.1", 32768, 32768)}


def test_label_for_a_port_the_container_bound_otherwise_does_not_widen() -> None:
    # the container binds 80 to 8080 (-p 8080:80 straight to the guest), the label claims an
    # ephemeral 0.0.0.0 binding, or a different host port, or more bindings: all disagree.
    guest = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    for label in (EVIL, {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9090"}]},
                  {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                              {"HostIp": "0.0.0.0", "HostPort": ""}]}):
        c = container_forwards(inspect({"80/tcp": bound(8080)}, label, port_bindings=guest))
        assert rules(c) == {("tcp", "127.0.0.1", 8080, 8080)}, label
    # the guest publishing on an address of its own: not what the proxy sends either
    guest_ip = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    label = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    c = container_forwards(inspect({"80/tcp": bound(8080)}, label, port_bindings=guest_ip))
    assert rules(c) == {("tcp", "127.0.0.1", 8080, 8080)}


def test_publish_all_plus_one_binding_trusts_only_that_port() -> None:
    # -P -p 0.0.0.0:8080:80 with an image exposing 443: the label names 80 only, as the guest
    # bindings do; a label naming 443 too (forged) widens 80 and not 443.
    label = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
             "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": ""}]}
    guest = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    c = container_forwards(inspect({"80/tcp": bound(8080), "443/tcp": bound(32769)}, label,
                                   port_bindings=guest))
    assert rules(c) == {("tcp", "0.0.0.0", 8080, 8080), ("tcp", "127.0.0.1", 32769, 32769)}
    assert len(c.warnings) == 1 and "443/tcp" in c.warnings[0]


def test_label_that_agrees_is_trusted_with_key_and_address_variants() -> None:
    # what the proxy stamps for -p 0.0.0.0:53:53/udp -p [::]:53:53/udp -p 80 (daemon keys "80")
    label = {"53/udp": [{"HostIp": "0.0.0.0", "HostPort": "53"},
                        {"HostIp": "::", "HostPort": "53"}],
             "80": [{"HostIp": "0.0.0.0"}]}
    guest = {"53/udp": [{"HostIp": "", "HostPort": "53"}],
             "80/tcp": [{"HostIp": "", "HostPort": ""}]}
    user, distrusted = trusted_bindings(json.dumps(label), guest)
    assert set(user) == {"53/udp", "80/tcp"} and distrusted == ()
    # a loopback-only label that disagrees is dropped silently: nothing to narrow
    user, distrusted = trusted_bindings(json.dumps({"80/tcp": [{"HostIp": "127.0.0.1"}]}), {})
    assert user == {} and distrusted == ()


def test_proxy_stamped_empty_label_means_loopback() -> None:
    c = container_forwards(inspect({"80/tcp": bound(32768)}, {}, port_bindings={}))
    assert rules(c) == {("tcp", "127.0.0.1", 32768, 32768)} and c.warnings == ()
