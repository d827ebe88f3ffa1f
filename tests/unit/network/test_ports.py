"""Published ports: -p forms, -P with EXPOSE, candidates, and what inspect and ps show."""

from __future__ import annotations

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.network import ports
from pydeskd.network.model import PortMapping


def test_forms_of_p() -> None:
    host = {"PortBindings": {
        "80/tcp": [{"HostIp": "", "HostPort": "18080"}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
        "443/tcp": [{"HostIp": "", "HostPort": ""}],
        "90/tcp": [{"HostIp": "", "HostPort": "9000-9010"}],
    }}
    got = ports.requested(host, {})
    assert ports.Wanted("udp", 53, "127.0.0.1", 5353, 5353) in got
    assert ports.Wanted("tcp", 80, "", 18080, 18080) in got
    assert ports.Wanted("tcp", 443, "", 0, 0) in got
    assert ports.Wanted("tcp", 90, "", 9000, 9010) in got


def test_publish_all_adds_every_exposed_port_not_bound() -> None:
    host = {"PublishAllPorts": True, "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}
    config = {"ExposedPorts": {"80/tcp": {}, "8443/tcp": {}, "53/udp": {}}}
    got = ports.requested(host, config)
    assert [(w.container_port, w.proto, w.low) for w in got] == [
        (80, "tcp", 8080), (53, "udp", 0), (8443, "tcp", 0)]


def test_exposed_alone_publishes_nothing() -> None:
    assert ports.requested({}, {"ExposedPorts": {"80/tcp": {}}}) == []


@pytest.mark.parametrize("key", ["0/tcp", "70000/tcp", "x/tcp", "80/icmp"])
def test_bad_port_keys(key: str) -> None:
    with pytest.raises(InvalidArgument):
        ports.requested({"PortBindings": {key: [{}]}}, {})


def test_ephemeral_candidates_wrap_and_skip_taken() -> None:
    want = ports.Wanted("tcp", 80, "", 0, 0)
    got = list(ports.candidates(want, {("tcp", 60999)}, rand=lambda a, b: 60998))
    assert got[:2] == [60998, 32768]
    assert len(got) == 60999 - 32768  # every port of the range but the taken one
    assert all(32768 <= p <= 60999 for p in got)


def test_fixed_candidate() -> None:
    assert list(ports.candidates(ports.Wanted("tcp", 80, "", 8080, 8080), set())) == [8080]
    assert list(ports.candidates(ports.Wanted("tcp", 80, "", 8080, 8080),
                                 {("tcp", 8080)})) == []


def test_inspect_and_summary_shapes() -> None:
    maps = [PortMapping("tcp", 80, "0.0.0.0", 18080)]
    assert ports.inspect_ports(["80/tcp", "443/tcp"], maps) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}], "443/tcp": None}
    assert ports.summary_ports(["80/tcp", "443/tcp"], maps) == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 18080, "Type": "tcp"},
        {"PrivatePort": 443, "Type": "tcp"}]
