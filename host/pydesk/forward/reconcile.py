"""From what is wanted and what exists to the rules to add and remove, and doing it.

What it is for: :func:`plan` is the pure diff (wanted forwards, the backend's rules, the rules this
module made); :func:`apply` runs a plan against a backend, removals first (a host port freed by a
stopped container can be taken by one that starts), and says what was made and what failed.
What it must never do: remove a rule it did not make, even when nothing wants it (the agent's
SSH forward shares the netdev), or take over a rule it finds already there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydesk.forward.backend import ForwardBackend, RuleRefused
from pydesk.forward.desired import Forward
from pydesk.forward.state import FailedForward

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    add: frozenset[Forward]
    """Wanted and missing."""
    remove: frozenset[Forward]
    """Made by us, present, no longer wanted."""
    keep: frozenset[Forward]
    """Made by us, present, still wanted."""

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


def plan(wanted: frozenset[Forward], existing: frozenset[Forward],
         ours: frozenset[Forward]) -> Plan:
    """Rules of ``ours`` that QEMU no longer has (it restarted) are simply forgotten; a wanted
    rule that exists but is not ours (the same rule made by someone else) is left as it is."""
    # Comprehensions, not set operators: the elements kept must be the ones that carry the
    # container's name (equal rules from ``existing`` have none).
    return Plan(add=frozenset(f for f in wanted if f not in existing),
                remove=frozenset(f for f in ours if f in existing and f not in wanted),
                keep=frozenset(f for f in wanted if f in ours and f in existing))


@dataclass(frozen=True)
class Outcome:
    made: frozenset[Forward]
    """Ours, present after the plan ran."""
    failed: tuple[FailedForward, ...]


def apply(p: Plan, backend: ForwardBackend) -> Outcome:
    """Runs the plan; BackendUnavailable propagates (nothing more can be done now)."""
    made = set(p.keep)
    for f in sorted(p.remove, key=_order):
        backend.remove(f)
        log.info("forward removed: %s", f.describe())
    failed: list[FailedForward] = []
    for f in sorted(p.add, key=_order):
        try:
            backend.add(f)
        except RuleRefused as e:
            failed.append(FailedForward(f, e.message, e.hint))
            continue
        made.add(f)
        log.info("forward added: %s", f.describe())
    return Outcome(frozenset(made), tuple(failed))


def _order(f: Forward) -> tuple[int, str, str]:
    return (f.host_port, str(f.proto), f.host_ip)
