"""Names the bridge driver gives the kernel, and what bringing a network up asks of the seams."""

from __future__ import annotations

import fcntl
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pydeskd.containerd.errors import FailedPrecondition
from pydeskd.network.driver import Names, Plumbing
from pydeskd.network.firewall import BridgeRule, Ruleset
from pydeskd.network.model import Network, Pool
from tests.unit.network.fakes import FakeFirewall, FakeLinks, FakeSysctls, fake_seams


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


def _bridge_net() -> Network:
    return Network("n" * 64, "app", "bridge", "", "pd-nnnnnnnnnnnn",
                   (Pool("10.3.0.0/24", "10.3.0.1"),))


def test_forward_policy_drop_only_when_pydesk_turned_forwarding_on(tmp_path: Path) -> None:
    seams = fake_seams()
    seams.host_lock = tmp_path / "run" / "lock"
    assert isinstance(seams.sysctls, FakeSysctls) and isinstance(seams.firewall, FakeFirewall)
    plumbing = Plumbing(Names.for_daemon(tmp_path, tmp_path), seams)
    plumbing.network_up(_bridge_net())                 # ip_forward was 0
    plumbing.firewall(Ruleset("PYDESK"))
    assert seams.firewall.applied[-1].forward_drop
    # a restarted daemon (ip_forward now 1) still knows it was pydesk's doing
    again = Plumbing(Names.for_daemon(tmp_path, tmp_path), seams)
    again.network_up(_bridge_net())
    again.firewall(Ruleset("PYDESK"))
    assert seams.firewall.applied[-1].forward_drop


def test_forwarding_already_on_keeps_the_hosts_forward_policy(tmp_path: Path) -> None:
    seams = fake_seams()
    seams.host_lock = tmp_path / "run" / "lock"
    assert isinstance(seams.sysctls, FakeSysctls) and isinstance(seams.firewall, FakeFirewall)
    seams.sysctls.values["net.ipv4.ip_forward"] = "1"
    plumbing = Plumbing(Names.for_daemon(tmp_path, tmp_path), seams)
    plumbing.network_up(_bridge_net())
    plumbing.firewall(Ruleset("PYDESK"))
    assert not seams.firewall.applied[-1].forward_drop
    assert not (tmp_path / "run" / "ip_forward").exists()


def test_host_lock_is_private_and_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    seams = fake_seams()
    seams.host_lock = tmp_path / "run" / "lock"
    seams.host_lock_timeout = 0.2
    plumbing = Plumbing(Names.for_daemon(tmp_path, tmp_path), seams)
    seams.host_lock.parent.mkdir(mode=0o755)
    seams.host_lock.touch(mode=0o644)              # as an older pydesk left them
    with plumbing.host_lock():
        pass
    assert stat.S_IMODE(seams.host_lock.stat().st_mode) == 0o600
    assert stat.S_IMODE(seams.host_lock.parent.stat().st_mode) == 0o700
    with open(seams.host_lock) as other:          # someone else holds it
        fcntl.flock(other, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(FailedPrecondition, match="held by another process"), \
                plumbing.host_lock():
            pass
        assert time.monotonic() - started < 5
    with plumbing.host_lock():                     # released: free again
        pass


@dataclass
class CheckingFirewall(FakeFirewall):
    still_there: bool = True
    checks: int = 0

    def intact(self, ruleset: Ruleset) -> bool:
        del ruleset
        self.checks += 1
        return self.still_there


def test_an_unchanged_ruleset_is_checked_and_reapplied_when_gone(tmp_path: Path) -> None:
    seams = fake_seams()
    fw = CheckingFirewall()
    seams.firewall = fw
    plumbing = Plumbing(Names.for_daemon(tmp_path, tmp_path), seams)
    rs = Ruleset("PYDESK", (BridgeRule("pydesk0", "172.17.0.0/16"),))
    plumbing.firewall(rs)
    plumbing.firewall(rs)
    assert len(fw.applied) == 1 and fw.checks == 1    # still there: no restore
    fw.still_there = False                            # e.g. firewall-cmd --reload
    plumbing.firewall(rs)
    assert len(fw.applied) == 2
