"""API shapes: request decoding (Docker's messages) and the network / NetworkSettings JSON."""

from __future__ import annotations

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.network.model import (
    Active,
    Attachment,
    Endpoint,
    EndpointConfig,
    Network,
    Pool,
    PortMapping,
)
from pydeskd.network.requests import CreateRequest, EndpointRequest, PoolRequest
from pydeskd.network.views import check_filters, network_json, network_settings

NET = Network("n" * 64, "app", "bridge", "2026-01-01T00:00:00Z", "pd-nnnnnnnnnnnn",
              (Pool("172.18.0.0/16", "172.18.0.1"),), labels={"a": "b"})
DEFAULT = Network("d" * 64, "bridge", "bridge", "2026-01-01T00:00:00Z", "pydesk0",
                  (Pool("172.17.0.0/16", "172.17.0.1"),), default=True)


def test_create_request_from_the_cli_body() -> None:
    req = CreateRequest.from_api({
        "Name": "app", "CheckDuplicate": True, "Driver": "bridge", "Internal": True,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.1.0.0/24",
                                                   "Gateway": "10.1.0.254",
                                                   "IPRange": "10.1.0.128/25"}]},
        "Labels": {"k": "v"}, "Options": {}})
    assert req.internal and req.labels == {"k": "v"}
    assert req.pools == (PoolRequest("10.1.0.0/24", "10.1.0.254", "10.1.0.128/25"),)


@pytest.mark.parametrize(("body", "message"), [
    ({"Name": ""}, "network name cannot be empty"),
    ({"Name": "x", "Driver": "overlay"}, 'plugin "overlay" not found'),
    ({"Name": "x", "EnableIPv6": True}, "IPv6"),
    ({"Name": "x", "IPAM": {"Config": [{"Gateway": "10.0.0.1"}]}}, "need a subnet"),
    ({"Name": "x", "Labels": {"a": 1}}, "Labels"),
])
def test_create_request_refusals(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        CreateRequest.from_api(body)


def test_endpoint_request() -> None:
    got = EndpointRequest.from_api({"IPAMConfig": {"IPv4Address": "172.18.0.9"},
                                    "Aliases": ["db", "db", "database"]})
    assert got == EndpointRequest("172.18.0.9", ("db", "database"))
    assert EndpointRequest.from_api(None) == EndpointRequest()
    with pytest.raises(InvalidArgument):
        EndpointRequest.from_api({"Aliases": "db"})


def test_network_json_is_dockers_shape() -> None:
    got = network_json(NET, {"c1": {"Name": "one"}})
    assert got["Name"] == "app" and got["Scope"] == "local" and got["Driver"] == "bridge"
    assert got["IPAM"] == {"Driver": "default", "Options": None,
                           "Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]}
    assert got["Containers"] == {"c1": {"Name": "one"}} and got["Labels"] == {"a": "b"}
    assert network_json(DEFAULT)["Options"]["com.docker.network.bridge.default_bridge"] == \
        "true"


def test_filters_are_checked() -> None:
    check_filters({"name": ["x"], "type": ["custom"], "dangling": ["true"]})
    for bad in ({"nope": ["1"]}, {"type": ["weird"]}, {"dangling": ["maybe"]}):
        with pytest.raises(InvalidArgument):
            check_filters(bad)


def test_network_settings_of_a_running_container() -> None:
    ep = Endpoint(NET.id, "e" * 64, "172.18.0.2", 16, "172.18.0.1", "02:42:ac:12:00:02", "eth0",
                  "pdvx")
    att = Attachment("c" * 64, "web", "app", (EndpointConfig(NET.id, ("site",)),),
                     Active("/run/x/netns/c", (ep,), (PortMapping("tcp", 80, "0.0.0.0", 8080),)))
    got = network_settings(att, {NET.id: NET}, ["80/tcp", "443/tcp"])
    assert got["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                            "443/tcp": None}
    entry = got["Networks"]["app"]
    assert entry["IPAddress"] == "172.18.0.2" and entry["Gateway"] == "172.18.0.1"
    assert entry["Aliases"] == ["site"]   # API 1.45+: the short ID is in DNSNames only
    assert entry["DNSNames"] == ["web", "site", "c" * 12]
    assert got["SandboxKey"] == "/run/x/netns/c"
    assert got["IPAddress"] == ""   # top-level fields are the default bridge's only


def test_network_settings_of_a_stopped_container() -> None:
    att = Attachment("c" * 64, "web", "bridge", (EndpointConfig(DEFAULT.id),))
    got = network_settings(att, {DEFAULT.id: DEFAULT}, ["80/tcp"])
    assert got["Ports"] == {} and got["Networks"]["bridge"]["IPAddress"] == ""


def test_ps_filters_over_rows() -> None:
    from pydeskd.network.views import row_matches
    row = {"NetworkSettings": {"Networks": {"app": {"NetworkID": "n" * 64}}},
           "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                     {"PrivatePort": 53, "Type": "udp"}]}
    assert row_matches(row, {"network": ["app"]})
    assert row_matches(row, {"network": ["n" * 12]})
    assert not row_matches(row, {"network": ["other"]})
    assert row_matches(row, {"publish": ["8080"]})
    assert row_matches(row, {"publish": ["8000-8100/tcp"]})
    assert not row_matches(row, {"publish": ["8080/udp"]})
    assert row_matches(row, {"expose": ["53/udp"]})
    assert not row_matches(row, {"expose": ["54"]})
    with pytest.raises(InvalidArgument):
        row_matches(row, {"publish": ["http"]})
