"""Sync decisions as pure functions: what to send, fetch, delete, and what is a conflict.

What it is for: the initial sync compares three manifests per path — the host's scan, the
guest's scan, and the last *agreed* state (saved on the host after every sync) — and
:func:`initial_plan` says, for each path, which side changed it since the agreed state:
- same on both sides: nothing to do (the agreed state becomes that);
- only the host changed it: push (or delete in the guest); only the guest: pull (or delete on the
  host);
- both changed it: a deletion loses against a modification (no data is lost); two different
  contents are a conflict, resolved by :func:`conflict_winner` (newer mtime wins; the other version
  is kept beside it as ``NAME.pydesk-conflict-<side>-<UTC time>`` on both sides).
A directory never conflicts with a directory (only its mode can differ: the newer one wins).
What it must never do: touch the filesystem or the network; every input is a manifest.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydeskd.syncd.fstree import DIR, FILE, Entry, same

Manifest = Mapping[str, Entry]
HOST, GUEST = "host", "guest"


class Action(enum.StrEnum):
    PUSH = "push"  # host -> guest (host entry present)
    PULL = "pull"  # guest -> host (guest entry present)
    DELETE_GUEST = "delete-guest"
    DELETE_HOST = "delete-host"
    CONFLICT = "conflict"


@dataclass
class Plan:
    push: list[Entry] = field(default_factory=list)
    pull: list[Entry] = field(default_factory=list)
    delete_guest: list[Entry] = field(default_factory=list)
    delete_host: list[Entry] = field(default_factory=list)
    conflicts: list[tuple[Entry, Entry]] = field(default_factory=list)  # (host, guest)
    agreed: dict[str, Entry] = field(default_factory=dict)
    """Paths already equal on both sides: the new agreed state starts from these."""


def decide(h: Entry | None, g: Entry | None, base: Entry | None) -> Action | None:
    """One path: None when both sides already agree (or both lack it)."""
    if same(h, g):
        return None
    if h is not None and g is not None and h.kind == DIR and g.kind == DIR:
        # Two directories differ only by mode: whichever side changed it (or the newer) wins.
        if same(g, base):
            return Action.PUSH
        if same(h, base):
            return Action.PULL
        return Action.PUSH if h.mtime_ns >= g.mtime_ns else Action.PULL
    if same(g, base):
        return Action.PUSH if h is not None else Action.DELETE_GUEST
    if same(h, base):
        return Action.PULL if g is not None else Action.DELETE_HOST
    # Both sides changed it since the agreed state.
    if h is None:
        return Action.PULL  # deleted on the host, modified in the guest: keep the modification
    if g is None:
        return Action.PUSH
    return Action.CONFLICT


def initial_plan(host: Manifest, guest: Manifest, base: Manifest) -> Plan:
    """The whole first sync of a session. Lists are in path order; deletions deepest first."""
    plan = Plan()
    for path in sorted(set(host) | set(guest) | set(base)):
        h, g = host.get(path), guest.get(path)
        action = decide(h, g, base.get(path))
        if action is None:
            if h is not None:
                plan.agreed[path] = h
        elif action is Action.PUSH:
            assert h is not None
            plan.push.append(h)
        elif action is Action.PULL:
            assert g is not None
            plan.pull.append(g)
        elif action is Action.DELETE_GUEST:
            assert g is not None
            plan.delete_guest.append(g)
        elif action is Action.DELETE_HOST:
            assert h is not None
            plan.delete_host.append(h)
        else:
            assert h is not None and g is not None
            plan.conflicts.append((h, g))
    plan.delete_guest.reverse()
    plan.delete_host.reverse()
    return plan


def conflict_winner(h: Entry, g: Entry) -> str:
    """HOST or GUEST. A directory always wins over a file or link (its children are at stake);
    else the newer mtime wins, the host on a tie."""
    if h.kind == DIR and g.kind != DIR:
        return HOST
    if g.kind == DIR and h.kind != DIR:
        return GUEST
    return HOST if h.mtime_ns >= g.mtime_ns else GUEST


def conflict_name(path: str, loser: str, now: float | None = None, n: int = 1) -> str:
    """``dir/NAME.pydesk-conflict-<loser>-<UTC timestamp>`` beside ``path``; ``n`` > 1 adds
    ``-<n>``: a second conflict within the same second takes the next free number (the caller
    tries n = 1, 2, ... and never replaces an existing copy)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{path}.pydesk-conflict-{loser}-{stamp}" + (f"-{n}" if n > 1 else "")


def under(path: str, manifest: Manifest) -> list[str]:
    """Paths of ``manifest`` strictly below directory ``path``, deepest first."""
    prefix = path + "/"
    return sorted((p for p in manifest if p.startswith(prefix)), reverse=True)


def match_renames(gone: Manifest, appeared: Manifest,
                  moves: Mapping[str, str]) -> list[tuple[str, str]]:
    """(old path, new path) pairs of one batch of changes sent as one ``mv`` instead of a
    delete and the whole content again: only renames a watcher saw happen (``moves``: new path
    -> old path, from watchdog's move events or inotify's move cookies), and only when the file
    that vanished (its agreed entry) and the one that appeared still agree on size, mtime and
    mode. Two files that merely look alike (a delete and a ``tar x`` or ``cp -p`` in one batch)
    are never paired: a wrong guess would give one file the other's bytes, silently."""
    pairs: list[tuple[str, str]] = []
    used: set[str] = set()
    for new, old in sorted(moves.items()):
        before, after = gone.get(old), appeared.get(new)
        if before is None or after is None or old in used:
            continue
        if before.kind == FILE and same(before, after):
            used.add(old)
            pairs.append((old, new))
    return sorted(pairs)
