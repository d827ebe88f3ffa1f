"""Endpoints from the daemon configuration: mirrors, insecure registries, loopback."""

from __future__ import annotations

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.registry.hosts import Endpoint, RegistryHosts


def test_docker_hub_uses_mirrors_then_registry_1() -> None:
    hosts = RegistryHosts(mirrors=("https://mirror.example.com", "http://127.0.0.1:5001/prefix/"))
    assert hosts.endpoints("docker.io") == [
        Endpoint("mirror.example.com", "https", True),
        Endpoint("127.0.0.1:5001", "http", True, "/prefix"),
        Endpoint("registry-1.docker.io", "https"),
    ]
    assert hosts.endpoints("docker.io")[1].url("/v2/") == "http://127.0.0.1:5001/prefix/v2/"
    assert hosts.push_endpoint("docker.io") == Endpoint("registry-1.docker.io", "https")


def test_mirrors_do_not_apply_to_other_registries() -> None:
    hosts = RegistryHosts(mirrors=("https://mirror.example.com",))
    assert hosts.endpoints("ghcr.io") == [Endpoint("ghcr.io", "https")]


@pytest.mark.parametrize(("host", "scheme"), [
    ("localhost:5000", "http"),
    ("localhost", "http"),
    ("127.0.0.1:5000", "http"),
    ("127.10.0.3:80", "http"),
    ("[::1]:5000", "http"),
    ("myregistry:5000", "http"),   # listed as host:port
    ("plainhost", "http"),         # listed without port: any port
    ("plainhost:8080", "http"),
    ("10.1.2.3:5000", "http"),     # in a CIDR
    ("10.1.2.3.example.com", "https"),  # a name never matches a CIDR
    ("11.1.2.3:5000", "https"),
    ("myregistry:5001", "https"),
    ("ghcr.io", "https"),
])
def test_insecure_and_loopback(host: str, scheme: str) -> None:
    hosts = RegistryHosts(insecure=("myregistry:5000", "plainhost", "10.0.0.0/8"))
    assert hosts.endpoints(host) == [Endpoint(host, scheme)]


@pytest.mark.parametrize("mirror", ["mirror.example.com", "ftp://x", "https://u:p@x", "https://x?q"])
def test_bad_mirror_refused(mirror: str) -> None:
    with pytest.raises(InvalidArgument):
        RegistryHosts(mirrors=(mirror,))


def test_bad_cidr_refused() -> None:
    with pytest.raises(InvalidArgument, match="CIDR"):
        RegistryHosts(insecure=("10.0.0.0/99",))
