"""The one seam for the firewall: iptables commands (any backend, nft included here).

What it is for: ``IptablesFirewall.apply(ruleset)`` loads the rendering of
:mod:`.firewall` with one ``iptables-restore --noflush`` (atomic: all of pydesk's chains or none
change), makes sure the jumps into them exist and, when the rule set asks, sets the FORWARD
policy to DROP; ``teardown(prefix)`` removes the jumps and the chains. ``intact(ruleset)``
says, from one ``iptables-save``, whether what ``apply`` loaded is still there: a
``firewall-cmd --reload``, ``ufw reload`` or ``iptables -F FORWARD`` removes jumps or chains
behind pydesk's back, and the caller then applies again. ``probe()`` says which firewall the
host has. Every command goes through ``run``, which logs the exact command line on failure;
``-w`` waits for the xtables lock, which other daemons on the same host (or a Docker Engine)
may hold.

What it must never do: flush or delete a chain whose name does not start with the prefix.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydeskd.containerd.errors import FailedPrecondition
from pydeskd.network.firewall import CHAINS, Ruleset, jumps, render_iptables

log = logging.getLogger(__name__)


class Firewall(Protocol):
    def apply(self, ruleset: Ruleset) -> None: ...

    def teardown(self, prefix: str) -> None: ...


@runtime_checkable
class CheckedFirewall(Protocol):
    """A firewall that can tell whether what it applied is still in the kernel."""

    def intact(self, ruleset: Ruleset) -> bool: ...


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
        self.save = f"{iptables}-save"

    def apply(self, ruleset: Ruleset) -> None:
        run([self.restore, "-w", "--noflush"], input=render_iptables(ruleset))
        # Checked on every apply, never cached: someone else's reload may have removed them.
        present = saved_rules(run([self.save], check=False).stdout)
        for table, chain, rule in jumps(ruleset.prefix):
            if (table, f"-A {chain} {' '.join(rule)}") in present:
                continue
            if run([self.iptables, "-w", "-t", table, "-C", chain, *rule],
                   check=False).returncode != 0:
                run([self.iptables, "-w", "-t", table, "-I", chain, "1", *rule])
        if ruleset.forward_drop:
            run([self.iptables, "-w", "-P", "FORWARD", "DROP"])

    def intact(self, ruleset: Ruleset) -> bool:
        """Whether the jumps and every pydesk chain with as many rules as the rendering has
        are in the kernel (one ``iptables-save``). The FORWARD policy is not checked: it is
        set when rules are loaded, and an admin who puts it back to ACCEPT afterwards meant
        it."""
        done = run([self.save], check=False)
        if done.returncode != 0:
            return False
        present = saved_rules(done.stdout)
        if any((table, f"-A {chain} {' '.join(rule)}") not in present
               for table, chain, rule in jumps(ruleset.prefix)):
            return False
        wanted = saved_rules(render_iptables(ruleset))
        return all(_count(present, table, f":{ruleset.chain(s)} ") ==
                   _count(wanted, table, f":{ruleset.chain(s)} ") and
                   _count(present, table, f"-A {ruleset.chain(s)} ") ==
                   _count(wanted, table, f"-A {ruleset.chain(s)} ")
                   for table, suffixes in CHAINS for s in suffixes)

    def teardown(self, prefix: str) -> None:
        if not prefix.startswith("PYDESK"):
            raise ValueError(f"not a pydesk chain prefix: {prefix}")
        for table, chain, rule in jumps(prefix):
            while run([self.iptables, "-w", "-t", table, "-D", chain, *rule],
                      check=False).returncode == 0:
                pass
        for table, suffixes in CHAINS:
            for suffix in suffixes:
                run([self.iptables, "-w", "-t", table, "-F", f"{prefix}-{suffix}"], check=False)
            for suffix in suffixes:
                run([self.iptables, "-w", "-t", table, "-X", f"{prefix}-{suffix}"], check=False)


def saved_rules(text: str) -> set[tuple[str, str]]:
    """(table, line) of an ``iptables-save`` (or ``-restore`` input) text; chain lines keep
    only their name and policy (``:FORWARD DROP``), not their counters."""
    out: set[tuple[str, str]] = set()
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            out.add((table, " ".join(line.split()[:2])))
        elif line.startswith("-A "):
            out.add((table, line.strip()))
    return out


def _count(lines: set[tuple[str, str]], table: str, start: str) -> int:
    return sum(1 for t, line in lines if t == table and line.startswith(start))


class NoFirewall:
    """No iptables on this host: containers still get addresses, but no NAT or isolation."""

    def apply(self, ruleset: Ruleset) -> None:
        del ruleset

    def teardown(self, prefix: str) -> None:
        del prefix
