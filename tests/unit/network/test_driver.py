"""Names the bridge driver gives the kernel, and what bringing a network up asks of the seams."""

from __future__ import annotations

from pathlib import Path

from pydeskd.network.driver import Names, Plumbing
from pydeskd.network.model import Network, Pool
from tests.unit.network.fakes import FakeLinks, FakeSysctls, fake_seams


def test_default_daemon_names() -> None:
    names = Names.for_daemon(Path("/var/lib/pydesk"), Path("/run/pydesk"))
    assert (names.default_bridge, names.chain_prefix) == ("pydesk0", "PYDESK")
    assert names.netns("c1") == Path("/run/pydesk/netns/c1")


def test_other_data_roots_get_names_of_their_own(tmp_path: Path) -> None:
    one = Names.for_daemon(tmp_path / "a", tmp_path / "x")
    two = Names.for_daemon(tmp_path / "b", tmp_path / "y")
    assert one.default_bridge != two.default_bridge
    assert one.chain_prefix.startswith("PYDESK-") and one.chain_prefix != two.chain_prefix
    assert len(one.default_bridge) <= 15
    assert one == Names.for_daemon(tmp_path / "a", tmp_path / "x")   # stable across restarts


def test_link_names_fit_the_kernels_limit() -> None:
    assert Names.user_bridge("0123456789abcdef" * 4) == "pd-0123456789ab"
    veth = Names.host_veth("c" * 64, "n" * 64)
    assert veth.startswith("pdv") and len(veth) <= 15
    assert veth == Names.host_veth("c" * 64, "n" * 64) != Names.host_veth("c" * 64, "m" * 64)


def test_network_up_sets_the_bridge_and_sysctls(tmp_path: Path) -> None:
    seams = fake_seams()
    plumbing = Plumbing(Names.for_daemon(tmp_path, tmp_path), seams)
    net = Network("n" * 64, "app", "bridge", "", "pd-nnnnnnnnnnnn",
                  (Pool("10.3.0.0/24", "10.3.0.1"),))
    plumbing.network_up(net)
    assert isinstance(seams.links, FakeLinks) and isinstance(seams.sysctls, FakeSysctls)
    assert seams.links.bridges["pd-nnnnnnnnnnnn"] == ("10.3.0.1", 24)
    assert seams.sysctls.values == {"net.ipv4.conf.pd-nnnnnnnnnnnn.route_localnet": "1",
                                    "net.ipv4.ip_forward": "1"}
    plumbing.network_down(net)
    assert seams.links.bridges == {}
