"""Published ports: -p forms, -P with EXPOSE, candidates, and what inspect and ps show."""

from __future__ import annotations

from typing import Any

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.network import ports
from pydeskd.network.model import PortMapping
from pydeskd.network.requests import EndpointRequest


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
    config: dict[str, Any] = {"ExposedPorts": {"80/tcp": {}, "8443/tcp": {}, "53/udp": {}}}
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


@pytest.mark.parametrize("host_ip", ["../../etc", "..", "localhost", "1.2.3", "fe80::1%eth0",
                                     "10.0.0.1/8"])
def test_a_host_ip_that_is_not_an_address_is_refused(host_ip: str) -> None:
    # Review finding 24: HostIp named pid files raw ("..": out of the proxies directory).
    with pytest.raises(InvalidArgument, match="invalid IP address"):
        ports.requested({"PortBindings": {"80/tcp": [{"HostIp": host_ip, "HostPort": "8080"}]}},
                        {})


def test_host_ips_are_canonical_and_every_address_stays_apart() -> None:
    bindings = {"80/tcp": [{"HostIp": "0000::1", "HostPort": "1"}, {"HostIp": "[::]"},
                           {"HostIp": "0.0.0.0"}, {"HostIp": ""}]}
    got = [w.host_ip for w in ports.requested({"PortBindings": bindings}, {})]
    assert got == ["::1", "::", "0.0.0.0", ""]


def test_every_address_shows_as_0_0_0_0() -> None:
    mapping = PortMapping("tcp", 80, "", 8080)
    assert ports.inspect_ports([], [mapping]) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    assert ports.summary_ports([], [mapping])[0]["IP"] == "0.0.0.0"


@pytest.mark.parametrize("mac", ["zz:42:ac:11:00:02", "02:42:ac:11:00", "02:42:ac:11:00:02:03",
                                 "0242ac110002", "01:00:5e:00:00:01", "../x"])
def test_a_bad_mac_address_is_refused(mac: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid MAC address"):
        EndpointRequest.from_api({"MacAddress": mac})


def test_mac_addresses_are_canonical() -> None:
    assert EndpointRequest.from_api({"MacAddress": "02-42-AC-11-00-09"}).mac == \
        "02:42:ac:11:00:09"
    assert EndpointRequest.from_api({}).mac == ""
