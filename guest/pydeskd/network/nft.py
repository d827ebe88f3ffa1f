"""The firewall seam for hosts with nftables but no iptables command: one table of pydesk's own.

What it is for: the same rule set as :mod:`.firewall` (masquerade, isolation, ``--internal``,
published ports with DNAT, hairpin and 127.0.0.1), rendered as one nft script that deletes and
recreates the table ``ip pydesk[-<tag>]`` in a single transaction (``nft -f``), so applying it
is atomic and replaces every pydesk rule. ``teardown`` deletes the table.

What it must never do: touch a table that is not pydesk's.
"""

from __future__ import annotations

from pydeskd.network.firewall import Ruleset, kernel_ports
from pydeskd.network.iptables import run


def table_name(prefix: str) -> str:
    return prefix.lower().replace("-", "_")


def _dnat_match(host_ip: str) -> str:
    return "" if host_ip in ("", "0.0.0.0") else f"ip daddr {host_ip} "


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
                    f"{p.container_port} accept" for p in kernel_ports(rs)
                    if p.bridge == b.bridge]
            fwd += [f"iifname {br} accept", f"oifname {br} drop"]
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
             "  chain forward {", "    type filter hook forward priority filter; policy accept;",
             *(f"    {r}" for r in fwd), "  }",
             "  chain published {", *(f"    {r}" for r in dnat), "  }",
             "  chain prerouting {", "    type nat hook prerouting priority dstnat;",
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

    def teardown(self, prefix: str) -> None:
        if not prefix.startswith("PYDESK"):
            raise ValueError(f"not a pydesk prefix: {prefix}")
        table = table_name(prefix)
        run([self.nft, "-f", "-"], input=f"table ip {table} {{}}\ndelete table ip {table}\n")
