"""Rule generation: the whole pydesk rule set from the state, as iptables-restore input."""

from __future__ import annotations

from pydeskd.network.firewall import BridgeRule, PortRule, Ruleset, jumps, render_iptables

RS = Ruleset("PYDESK", (BridgeRule("pydesk0", "172.17.0.0/16"),
                        BridgeRule("pd-aaa", "172.18.0.0/16"),
                        BridgeRule("pd-int", "172.19.0.0/16", internal=True)),
             (PortRule("tcp", "0.0.0.0", 18080, "172.17.0.2", 80, "pydesk0"),
              PortRule("udp", "127.0.0.1", 5353, "172.17.0.2", 53, "pydesk0"),
              PortRule("tcp", "::1", 18081, "172.17.0.2", 81, "pydesk0")))


def lines() -> list[str]:
    return render_iptables(RS).splitlines()


def test_every_chain_is_declared_so_the_restore_replaces_it() -> None:
    text = lines()
    for chain in ("FWD", "ISO1", "ISO2", "PORTS", "IN", "DNAT", "SNAT", "RAW"):
        assert f":PYDESK-{chain} - [0:0]" in text
    assert text.count("COMMIT") == 3
    assert all(not line.startswith("-A") or line.split()[1].startswith("PYDESK-")
               for line in text)


def test_outbound_masquerade_only_for_non_internal_networks() -> None:
    text = lines()
    assert "-A PYDESK-SNAT -s 172.17.0.0/16 ! -o pydesk0 -j MASQUERADE" in text
    assert "-A PYDESK-SNAT -s 172.18.0.0/16 ! -o pd-aaa -j MASQUERADE" in text
    assert not any("172.19.0.0/16" in line for line in text)


def test_isolation_between_bridges() -> None:
    text = lines()
    for bridge in ("pydesk0", "pd-aaa", "pd-int"):
        assert f"-A PYDESK-ISO1 -i {bridge} ! -o {bridge} -j PYDESK-ISO2" in text
        assert f"-A PYDESK-ISO2 -o {bridge} -j DROP" in text
    assert text.index("-A PYDESK-FWD -j PYDESK-ISO1") < min(
        i for i, line in enumerate(text) if line.startswith("-A PYDESK-FWD -o"))


def test_internal_network_has_no_way_out() -> None:
    text = lines()
    assert "-A PYDESK-FWD -i pd-int ! -o pd-int -j DROP" in text
    assert "-A PYDESK-FWD ! -i pd-int -o pd-int -j DROP" in text
    assert not any("-i pd-int ! -o pd-int -j ACCEPT" in line for line in text)


def test_published_ports_dnat_filter_and_hairpin() -> None:
    text = lines()
    assert ("-A PYDESK-DNAT -p tcp -m tcp --dport 18080 -j DNAT --to-destination "
            "172.17.0.2:80") in text
    assert ("-A PYDESK-DNAT -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT "
            "--to-destination 172.17.0.2:53") in text
    assert ("-A PYDESK-PORTS -d 172.17.0.2/32 ! -i pydesk0 -o pydesk0 -p tcp -m tcp "
            "--dport 80 -m conntrack --ctstate DNAT -j ACCEPT") in text
    assert ("-A PYDESK-SNAT -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 "
            "-j MASQUERADE") in text
    assert "-A PYDESK-SNAT -s 127.0.0.0/8 -o pydesk0 -j MASQUERADE" in text
    assert not any("18081" in line for line in text)  # ::1: the proxy's, not the kernel's


def test_an_empty_state_empties_the_chains() -> None:
    text = render_iptables(Ruleset("PYDESK-abc")).splitlines()
    assert [line for line in text if line.startswith("-A")] == \
        ["-A PYDESK-abc-FWD -j PYDESK-abc-ISO1"]
    assert "*raw" in text and ":PYDESK-abc-RAW - [0:0]" in text


def test_jumps_are_for_local_destinations_only_in_nat() -> None:
    got = {(t, c): r for t, c, r in jumps("PYDESK")}
    assert got[("nat", "PREROUTING")][:4] == ["-m", "addrtype", "--dst-type", "LOCAL"]
    assert got[("nat", "OUTPUT")][:4] == ["-m", "addrtype", "--dst-type", "LOCAL"]
    assert got[("filter", "FORWARD")] == ["-j", "PYDESK-FWD"]
    assert got[("filter", "INPUT")] == ["-j", "PYDESK-IN"]
    assert got[("raw", "PREROUTING")] == ["-j", "PYDESK-RAW"]


def test_nft_rendering_is_one_transaction_over_pydesks_table() -> None:
    from pydeskd.network.nft import render_nft
    text = render_nft(RS).splitlines()
    assert text[:3] == ["table ip pydesk {}", "delete table ip pydesk", "table ip pydesk {"]
    body = "\n".join(text)
    assert 'ip saddr 172.17.0.0/16 oifname != "pydesk0" masquerade' in body
    assert "172.19.0.0/16" not in body   # internal: no masquerade
    assert 'iifname "pd-int" oifname != "pd-int" drop' in body
    assert "tcp dport 18080 dnat to 172.17.0.2:80" in body
    assert "ip daddr 127.0.0.1 udp dport 5353 dnat to 172.17.0.2:53" in body
    assert "18081" not in body
    assert body.count("fib daddr type local jump published") == 2
