"""Rules added after the network review (issue 5): loopback-only ports and the host's loopback
stay local (#2, #3), published-port accepts only for DNATed connections (#8), the resolver's
redirect from port 53 and its input filter (#9), the FORWARD policy (#7), and the check that
what was applied is still there (#17)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from pydeskd.network import iptables
from pydeskd.network.firewall import BridgeRule, PortRule, Ruleset, render_iptables
from pydeskd.network.iptables import IptablesFirewall
from pydeskd.network.nft import render_nft

RS = Ruleset("PYDESK", (BridgeRule("pydesk0", "172.17.0.0/16"),
                        BridgeRule("pd-aaa", "172.18.0.0/16", gateway="172.18.0.1",
                                   dns_port=35353)),
             (PortRule("tcp", "127.0.0.1", 18080, "172.17.0.2", 80, "pydesk0"),
              PortRule("tcp", "0.0.0.0", 18081, "172.17.0.2", 81, "pydesk0")))


def lines(rs: Ruleset = RS) -> list[str]:
    return render_iptables(rs).splitlines()


def section(text: list[str], table: str) -> list[str]:
    start = text.index(f"*{table}")
    return text[start:text.index("COMMIT", start)]


def test_loopback_published_port_is_dropped_from_other_interfaces_before_dnat() -> None:
    raw = section(lines(), "raw")
    assert ("-A PYDESK-RAW -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 18080 -j DROP"
            in raw)
    assert not any("18081" in line for line in raw)   # 0.0.0.0 is meant for the LAN


def test_loopback_destinations_off_a_bridge_are_dropped() -> None:
    raw = section(lines(), "raw")
    for bridge in ("pydesk0", "pd-aaa"):
        assert f"-A PYDESK-RAW -d 127.0.0.0/8 -i {bridge} -j DROP" in raw


def test_published_port_accept_needs_the_kernels_dnat() -> None:
    accepts = [line for line in lines() if line.startswith("-A PYDESK-PORTS")]
    assert accepts and all("-m conntrack --ctstate DNAT -j ACCEPT" in line for line in accepts)


def test_resolver_redirect_from_53_and_input_only_from_its_bridge() -> None:
    text = lines()
    for proto in ("udp", "tcp"):
        dnat = (f"-A PYDESK-DNAT -d 172.18.0.1/32 -i pd-aaa -p {proto} -m {proto} --dport 53 "
                f"-j DNAT --to-destination 172.18.0.1:35353")
        assert dnat in section(text, "nat")
        # before any published port: a -p 53:53 on 0.0.0.0 must not catch container DNS
        assert text.index(dnat) < min(i for i, line in enumerate(text)
                                      if "--dport 1808" in line and "DNAT" in line)
        accept = (f"-A PYDESK-IN -d 172.18.0.1/32 -p {proto} -m {proto} --dport 35353 "
                  f"-i pd-aaa -j ACCEPT")
        drop = f"-A PYDESK-IN -d 172.18.0.1/32 -p {proto} -m {proto} --dport 35353 -j DROP"
        assert text.index(accept) < text.index(drop)
    assert not any("pydesk0" in line for line in text if line.startswith("-A PYDESK-IN"))


def test_no_resolver_port_no_redirect() -> None:
    rs = Ruleset("PYDESK", (BridgeRule("pd-aaa", "172.18.0.0/16", gateway="172.18.0.1"),))
    assert not any("--dport 53" in line for line in lines(rs))
    assert not any(line.startswith("-A PYDESK-IN") for line in lines(rs))


def test_nft_has_the_same_protections() -> None:
    body = render_nft(Ruleset("PYDESK", RS.bridges, RS.ports, forward_drop=True))
    assert 'iifname != "lo" ip daddr 127.0.0.1 tcp dport 18080 drop' in body
    assert 'iifname "pd-aaa" ip daddr 127.0.0.0/8 drop' in body
    assert "type filter hook prerouting priority raw;" in body
    assert "tcp dport 80 ct status dnat accept" in body
    for proto in ("udp", "tcp"):
        assert (f'iifname "pd-aaa" ip daddr 172.18.0.1 {proto} dport 53 dnat to '
                f"172.18.0.1:35353") in body
        assert f'iifname "pd-aaa" ip daddr 172.18.0.1 {proto} dport 35353 accept' in body
        assert f"ip daddr 172.18.0.1 {proto} dport 35353 drop" in body
    assert "type filter hook forward priority filter; policy drop;" in body
    assert "policy drop" not in render_nft(RS)


class Recorder:
    """Stands in for ``iptables.run``: answers iptables-save with ``saved``."""

    def __init__(self, saved: str) -> None:
        self.saved = saved
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], input: str | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        del input, check
        self.calls.append(list(argv))
        out = self.saved if argv[0].endswith("-save") else ""
        rc = 1 if "-C" in argv else 0
        return subprocess.CompletedProcess(list(argv), rc, out, "")


def _as_saved(rs: Ruleset, *, jumps_present: bool = True, policy: str = "ACCEPT") -> str:
    """What iptables-save prints once ``rs`` is loaded."""
    from pydeskd.network.firewall import jumps
    text = render_iptables(rs)
    out: list[str] = []
    for line in text.splitlines():
        out.append(line)
        if line == "*filter":
            out += [":INPUT ACCEPT [0:0]", f":FORWARD {policy} [0:0]", ":OUTPUT ACCEPT [0:0]"]
            if jumps_present:
                out += [f"-A {c} {' '.join(r)}" for t, c, r in jumps(rs.prefix) if t == "filter"]
        elif line in ("*nat", "*raw") and jumps_present:
            out += [f"-A {c} {' '.join(r)}" for t, c, r in jumps(rs.prefix)
                    if t == line[1:]]
    return "\n".join(out) + "\n"


def test_intact_sees_removed_jumps_and_flushed_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    fw = IptablesFirewall()
    monkeypatch.setattr(iptables, "run", Recorder(_as_saved(RS)))
    assert fw.intact(RS)
    monkeypatch.setattr(iptables, "run", Recorder(_as_saved(RS, jumps_present=False)))
    assert not fw.intact(RS)                               # iptables -F FORWARD & co
    flushed = "\n".join(line for line in _as_saved(RS).splitlines()
                        if not line.startswith("-A PYDESK-DNAT"))
    monkeypatch.setattr(iptables, "run", Recorder(flushed))
    assert not fw.intact(RS)                               # a chain lost its rules


def test_apply_restores_missing_jumps_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    fw = IptablesFirewall()
    for _ in range(2):   # the second apply checks again: nothing is cached
        rec = Recorder(_as_saved(RS, jumps_present=False))
        monkeypatch.setattr(iptables, "run", rec)
        fw.apply(RS)
        inserted = [c for c in rec.calls if "-I" in c]
        assert len(inserted) == 6
    rec = Recorder(_as_saved(RS))
    monkeypatch.setattr(iptables, "run", rec)
    fw.apply(RS)
    assert not [c for c in rec.calls if "-I" in c or "-C" in c]   # all seen in one save
    assert not [c for c in rec.calls if "-P" in c]


def test_apply_sets_forward_policy_drop_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(_as_saved(RS))
    monkeypatch.setattr(iptables, "run", rec)
    IptablesFirewall().apply(Ruleset(RS.prefix, RS.bridges, RS.ports, forward_drop=True))
    assert ["iptables", "-w", "-P", "FORWARD", "DROP"] in rec.calls
