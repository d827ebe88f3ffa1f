"""IPAM: pool choice against pydesk's networks and the host's routes, Docker's messages for
bad input, address allocation and MACs."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument
from pydeskd.network import ipam
from pydeskd.network.model import Pool


def nets(*cidrs: str) -> list[IPv4Network]:
    return [IPv4Network(c) for c in cidrs]


def test_default_pools_are_dockers() -> None:
    pools = ipam.default_pools()
    assert pools[0] == IPv4Network("172.17.0.0/16")
    assert pools[14] == IPv4Network("172.31.0.0/16")
    assert pools[15] == IPv4Network("192.168.0.0/20")
    assert pools[-1] == IPv4Network("192.168.240.0/20")
    assert len(pools) == 31


def test_first_pool_when_the_host_has_only_a_default_route() -> None:
    assert ipam.choose_subnet([], nets("0.0.0.0/0", "192.0.2.0/24")) == \
        IPv4Network("172.17.0.0/16")


def test_a_running_docker0_moves_pydesk_to_the_next_pool() -> None:
    assert ipam.choose_subnet([], nets("172.17.0.0/16")) == IPv4Network("172.18.0.0/16")


def test_a_narrow_host_route_inside_a_pool_rules_the_pool_out() -> None:
    assert ipam.choose_subnet([], nets("172.17.5.0/24")) == IPv4Network("172.18.0.0/16")


def test_a_wide_host_route_rules_out_every_pool_it_covers() -> None:
    chosen = ipam.choose_subnet([], nets("172.16.0.0/12"))
    assert chosen == IPv4Network("192.168.0.0/20")


def test_pydesk_networks_are_skipped_too() -> None:
    chosen = ipam.choose_subnet(nets("172.17.0.0/16", "172.18.0.0/16"), nets("172.19.0.0/16"))
    assert chosen == IPv4Network("172.20.0.0/16")


def test_no_pool_left_is_dockers_error() -> None:
    with pytest.raises(FailedPrecondition, match="could not find an available, "
                       "non-overlapping IPv4 address pool"):
        ipam.choose_subnet([], nets("172.16.0.0/12", "192.168.0.0/16"))


@pytest.mark.parametrize("bad", ["300.1.1.0/24", "10.0.0.0/33", "nonsense", "10.1.2.3"])
def test_invalid_cidr(bad: str) -> None:
    with pytest.raises(InvalidArgument, match=f"invalid CIDR address: {bad}"):
        ipam.make_pool(bad)


def test_gateway_defaults_to_the_first_host_address() -> None:
    assert ipam.make_pool("10.5.0.0/16") == Pool("10.5.0.0/16", "10.5.0.1")


def test_host_bits_are_cleared_as_docker_does() -> None:
    assert ipam.make_pool("10.5.3.7/16").subnet == "10.5.0.0/16"


def test_gateway_outside_the_subnet() -> None:
    with pytest.raises(InvalidArgument, match=r"no matching subnet for gateway 10\.6\.0\.1"):
        ipam.make_pool("10.5.0.0/16", gateway="10.6.0.1")


def test_ip_range_outside_the_subnet() -> None:
    with pytest.raises(InvalidArgument, match=r"no matching subnet for range 10\.6\.0\.0/24"):
        ipam.make_pool("10.5.0.0/16", ip_range="10.6.0.0/24")


def test_allocation_skips_network_gateway_and_used() -> None:
    pool = ipam.make_pool("10.5.0.0/29")
    assert str(ipam.allocate(pool, [])) == "10.5.0.2"
    assert str(ipam.allocate(pool, ["10.5.0.2", "10.5.0.3"])) == "10.5.0.4"


def test_allocation_honours_the_ip_range() -> None:
    pool = ipam.make_pool("10.5.0.0/24", ip_range="10.5.0.128/25")
    assert str(ipam.allocate(pool, [])) == "10.5.0.129"


def test_exhausted_pool() -> None:
    pool = ipam.make_pool("10.5.0.0/30")
    assert str(ipam.allocate(pool, [])) == "10.5.0.2"
    with pytest.raises(ipam.AddressesExhausted, match="no available addresses"):
        ipam.allocate(pool, ["10.5.0.2"])


def test_static_address_checks() -> None:
    pool = ipam.make_pool("10.5.0.0/24")
    assert str(ipam.allocate(pool, [], "10.5.0.77")) == "10.5.0.77"
    with pytest.raises(FailedPrecondition, match="Address already in use"):
        ipam.allocate(pool, ["10.5.0.77"], "10.5.0.77")
    with pytest.raises(FailedPrecondition, match="Address already in use"):
        ipam.allocate(pool, [], "10.5.0.1")  # the gateway
    with pytest.raises(InvalidArgument, match="does not belong"):
        ipam.allocate(pool, [], "10.9.0.5")


def test_docker_mac() -> None:
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"
