"""The one seam for the firewall: iptables commands (any backend, nft included here).

What it is for: ``IptablesFirewall.apply(ruleset)`` loads the rendering of
:mod:`.firewall` with one ``iptables-restore --noflush`` (atomic: all of pydesk's chains or none
change) and makes sure the four jumps into them exist; ``teardown(prefix)`` removes the jumps and
the chains. ``probe()`` says which firewall the host has. Every command goes through ``run``,
which logs the exact command line on failure; ``-w`` waits for the xtables lock, which other
daemons on the same host (or a Docker Engine) may hold.

What it must never do: flush or delete a chain whose name does not start with the prefix.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from typing import Protocol

from pydeskd.containerd.errors import FailedPrecondition
from pydeskd.network.firewall import FILTER_CHAINS, NAT_CHAINS, Ruleset, jumps, render_iptables

log = logging.getLogger(__name__)


class Firewall(Protocol):
    def apply(self, ruleset: Ruleset) -> None: ...

    def teardown(self, prefix: str) -> None: ...


class FirewallError(FailedPrecondition):
    pass


def run(argv: Sequence[str], input: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          timeout=60, check=False)
    if check and done.returncode != 0:
        log.error("firewall command failed (%d): %s\n%s", done.returncode, " ".join(argv),
                  done.stderr.strip())
        raise FirewallError(f"{' '.join(argv[:3])}...: {done.stderr.strip()}")
    return done


def probe() -> str:
    """"iptables" when the iptables command is there (legacy or nft backend), "nft" when only
    nft is, "" for neither."""
    if shutil.which("iptables") and shutil.which("iptables-restore"):
        return "iptables"
    if shutil.which("nft"):
        return "nft"
    return ""


class IptablesFirewall:
    def __init__(self, iptables: str = "iptables") -> None:
        self.iptables = iptables
        self.restore = f"{iptables}-restore"
        self._jumps_made: set[str] = set()  # prefixes whose jumps this object checked

    def apply(self, ruleset: Ruleset) -> None:
        run([self.restore, "-w", "--noflush"], input=render_iptables(ruleset))
        if ruleset.prefix in self._jumps_made:
            return
        for table, chain, rule in jumps(ruleset.prefix):
            if run([self.iptables, "-w", "-t", table, "-C", chain, *rule],
                   check=False).returncode != 0:
                run([self.iptables, "-w", "-t", table, "-I", chain, "1", *rule])
        self._jumps_made.add(ruleset.prefix)

    def teardown(self, prefix: str) -> None:
        if not prefix.startswith("PYDESK"):
            raise ValueError(f"not a pydesk chain prefix: {prefix}")
        self._jumps_made.discard(prefix)
        for table, chain, rule in jumps(prefix):
            while run([self.iptables, "-w", "-t", table, "-D", chain, *rule],
                      check=False).returncode == 0:
                pass
        for table, suffixes in (("filter", FILTER_CHAINS), ("nat", NAT_CHAINS)):
            for suffix in suffixes:
                run([self.iptables, "-w", "-t", table, "-F", f"{prefix}-{suffix}"], check=False)
            for suffix in suffixes:
                run([self.iptables, "-w", "-t", table, "-X", f"{prefix}-{suffix}"], check=False)


class NoFirewall:
    """No iptables on this host: containers still get addresses, but no NAT or isolation."""

    def apply(self, ruleset: Ruleset) -> None:
        del ruleset

    def teardown(self, prefix: str) -> None:
        del prefix
