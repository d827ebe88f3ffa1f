"""The network API through docker-py (its request shapes differ from the CLI's): create with
IPAM and labels, run with ports and a network, connect with aliases and an address,
disconnect, list filters, prune, errors as docker-py's exception classes. Root."""

from __future__ import annotations

import docker  # type: ignore[import-untyped]
import pytest

from tests.integration.network.conftest import BUSYBOX, free_port, free_subnet, unique
from tests.support.pydeskd import Pydeskd

pytestmark = pytest.mark.integration


def test_docker_py_round_trip(d: Pydeskd) -> None:
    client = d.client()
    subnet = free_subnet()
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    name = unique("py")
    net = client.networks.create(name, driver="bridge", ipam=ipam, labels={"who": "py"})
    assert net.attrs["IPAM"]["Config"][0]["Subnet"] == subnet
    assert [n.name for n in client.networks.list(filters={"label": "who=py"})] == [name]
    port = free_port()
    c = client.containers.run(BUSYBOX, ["sleep", "300"], detach=True, network=name,
                              ports={"80/tcp": port})
    c.reload()
    assert c.attrs["NetworkSettings"]["Ports"]["80/tcp"] == [
        {"HostIp": "0.0.0.0", "HostPort": str(port)}]
    assert c.attrs["NetworkSettings"]["Networks"][name]["IPAddress"].startswith(
        subnet.rsplit(".", 1)[0])
    other = client.networks.create(unique("py2"))
    other.connect(c, aliases=["side"], ipv4_address=None)
    net.reload()
    other.reload()
    assert list(other.attrs["Containers"]) == [c.id]
    assert c.exec_run(["busybox", "ip", "-o", "link", "show", "eth1"]).exit_code == 0
    other.disconnect(c)
    with pytest.raises(docker.errors.NotFound):
        client.networks.get("no-such-net")
    with pytest.raises(docker.errors.APIError) as err:
        net.remove()
    assert err.value.status_code == 409
    c.remove(force=True)
    net.remove()
    report = client.networks.prune(filters={"label": "who=py"})
    assert report["NetworksDeleted"] in (None, [])
    assert other.name in client.networks.prune()["NetworksDeleted"]
