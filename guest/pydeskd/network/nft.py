"""The firewall seam for hosts with nftables but no iptables command: one table of pydesk's own.

What it is for: the same rule set as :mod:`.firewall` (masquerade, isolation, ``--internal``,
published ports with DNAT, hairpin and 127.0.0.1, the resolver's redirect and input filter,
the raw loopback drops, and a forward policy of drop when pydesk turned forwarding on -- in
nft a drop in any table is final, so that policy lives in pydesk's own forward chain),
rendered as one nft script that deletes and
recreates the table ``ip pydesk[-<tag>]`` in a single transaction (``nft -f``), so applying it
is atomic and replaces every pydesk rule. ``teardown`` deletes the table.

What it must never do: touch a table that is not pydesk's.
"""

from __future__ import annotations

import ipaddress

from pydeskd.network.firewall import DNS_PROTOS, Ruleset, kernel_ports, resolvers
from pydeskd.network.iptables import run


def table_name(prefix: str) -> str:
    return prefix.lower().replace("-", "_")


def _dnat_match(host_ip: str) -> str:
    return "" if host_ip in ("", "0.0.0.0") else f"ip daddr {host_ip} "


def _loopback_published(rs: Ruleset) -> list[str]:
    return [f"iifname != \"lo\" ip daddr {p.host_ip} {p.proto} dport {p.host_port} drop"
            for p in kernel_ports(rs)
            if p.host_ip not in ("", "0.0.0.0") and ipaddress.ip_address(p.host_ip).is_loopback]


def render_nft(rs: Ruleset) -> str:
    table = table_name(rs.prefix)
    fwd: list[str] = []
    for b in rs.bridges:
        others = [o.bridge for o in rs.bridges if o.bridge != b.bridge]
        if others:
            fwd.append(f'iifname "{b.bridge}" oifname {{ {", ".join(_q(o) for o in others)} }} '
                       f"drop")
    for b in rs.bridges:
        br = _q(b.bridge)
        if b.internal:
            fwd += [f"iifname {br} oifname != {br} drop", f"iifname != {br} oifname {br} drop",
                    f"iifname {br} oifname {br} accept"]
        else:
            fwd.append(f"oifname {br} ct state established,related accept")
            fwd += [f"ip daddr {p.container_ip} iifname != {br} oifname {br} {p.proto} dport "
                    f"{p.container_port} ct status dnat accept" for p in kernel_ports(rs)
                    if p.bridge == b.bridge]
            fwd += [f"iifname {br} accept", f"oifname {br} drop"]
    raw = [f"iifname {_q(b.bridge)} ip daddr 127.0.0.0/8 drop" for b in rs.bridges]
    raw += _loopback_published(rs)
    dns: list[str] = []
    accept_in: list[str] = []
    for b in resolvers(rs):
        for proto in DNS_PROTOS:
            dns.append(f"iifname {_q(b.bridge)} ip daddr {b.gateway} {proto} dport 53 "
                       f"dnat to {b.gateway}:{b.dns_port}")
            match = f"ip daddr {b.gateway} {proto} dport {b.dns_port}"
            accept_in += [f"iifname {_q(b.bridge)} {match} accept", f"{match} drop"]
    policy = "drop" if rs.forward_drop else "accept"
    dnat = [f"{_dnat_match(p.host_ip)}{p.proto} dport {p.host_port} dnat to "
            f"{p.container_ip}:{p.container_port}" for p in kernel_ports(rs)]
    snat: list[str] = []
    for b in rs.bridges:
        if not b.internal:
            snat.append(f"ip saddr {b.subnet} oifname != {_q(b.bridge)} masquerade")
            snat.append(f"ip saddr 127.0.0.0/8 oifname {_q(b.bridge)} masquerade")
    snat += [f"ip saddr {p.container_ip} ip daddr {p.container_ip} {p.proto} dport "
             f"{p.container_port} masquerade" for p in kernel_ports(rs)]
    lines = [f"table ip {table} {{}}", f"delete table ip {table}", f"table ip {table} {{",
             "  chain forward {",
             f"    type filter hook forward priority filter; policy {policy};",
             *(f"    {r}" for r in fwd), "  }",
             "  chain input {", "    type filter hook input priority filter; policy accept;",
             *(f"    {r}" for r in accept_in), "  }",
             "  chain raw {", "    type filter hook prerouting priority raw; policy accept;",
             *(f"    {r}" for r in raw), "  }",
             "  chain published {", *(f"    {r}" for r in dnat), "  }",
             "  chain prerouting {", "    type nat hook prerouting priority dstnat;",
             *(f"    {r}" for r in dns),
             "    fib daddr type local jump published", "  }",
             "  chain output {", "    type nat hook output priority -100;",
             "    fib daddr type local jump published", "  }",
             "  chain postrouting {", "    type nat hook postrouting priority srcnat;",
             *(f"    {r}" for r in snat), "  }", "}"]
    return "\n".join(lines) + "\n"


def _q(name: str) -> str:
    return f'"{name}"'


class NftFirewall:
    def __init__(self, nft: str = "nft") -> None:
        self.nft = nft

    def apply(self, ruleset: Ruleset) -> None:
        run([self.nft, "-f", "-"], input=render_nft(ruleset))

    def intact(self, ruleset: Ruleset) -> bool:
        """Whether pydesk's table is still there (``nft flush ruleset`` removes it)."""
        return run([self.nft, "list", "table", "ip", table_name(ruleset.prefix)],
                   check=False).returncode == 0

    def teardown(self, prefix: str) -> None:
        if not prefix.startswith("PYDESK"):
            raise ValueError(f"not a pydesk prefix: {prefix}")
        table = table_name(prefix)
        run([self.nft, "-f", "-"], input=f"table ip {table} {{}}\ndelete table ip {table}\n")
