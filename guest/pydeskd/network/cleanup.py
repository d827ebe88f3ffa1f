"""Taking down everything one daemon's network layer made on the host, after it stopped.

What it is for: test daemons (``tests/support/pydeskd.py``) and uninstalls. Reads the daemon's
stored networks and removes their bridges, the veths still enslaved to them, the pinned netns
files under its exec root, the port proxies whose pid files are there, and its firewall chains
(with the jumps into them). A running pydeskd would rebuild some of it: stop it first.

What it must never do: touch another daemon's bridges or chains (names come from this
daemon's roots and store only).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from pydeskd.network.driver import Names, Seams
from pydeskd.network.iptables import Firewall, IptablesFirewall
from pydeskd.network.nft import NftFirewall
from pydeskd.network.store import NetworkStore


def teardown(data_root: Path, exec_root: Path, seams: Seams | None = None) -> None:
    seams = seams if seams is not None else Seams(host_lock=None)
    names = Names.for_daemon(data_root, exec_root)
    if names.proxies_dir.is_dir():
        for pid_file in names.proxies_dir.glob("*.pid"):
            with contextlib.suppress(Exception):
                seams.proxies.stop(pid_file)
    if names.netns_dir.is_dir():
        for path in names.netns_dir.iterdir():
            with contextlib.suppress(OSError):
                seams.namespaces.delete(path)
    bridges = {names.default_bridge}
    if (data_root / "network").is_dir():
        store = NetworkStore(data_root / "network", durable=False)
        bridges |= {n.bridge for n in store.networks.values() if n.bridge}
    for bridge in sorted(bridges):
        with contextlib.suppress(Exception):
            for port in seams.links.bridge_ports(bridge):
                seams.links.delete_link(port)
        with contextlib.suppress(Exception):
            seams.links.delete_link(bridge)
    # Whichever backend the daemon's probe chose (its PATH may differ from ours): both go.
    for firewall in _firewalls(seams):
        with contextlib.suppress(Exception):
            firewall.teardown(names.chain_prefix)


def _firewalls(seams: Seams) -> list[Firewall]:
    out: list[Firewall] = [seams.firewall] if seams.firewall is not None else []
    if shutil.which("iptables") and not any(isinstance(f, IptablesFirewall) for f in out):
        out.append(IptablesFirewall())
    if shutil.which("nft") and not any(isinstance(f, NftFirewall) for f in out):
        out.append(NftFirewall())
    return out
