"""Conflict resolution: both sides changed a path since they last agreed on it.

What it is for: :func:`resolve_conflict` applies the rule of ``plan`` with the guest's version
in hand (received into a temporary file beside the path): the newer mtime wins and takes the
name; the other version is kept beside it as ``NAME.pydesk-conflict-<side>-<UTC time>``, on the
host here and in the guest by a ``mv`` (guest's version lost) or a push (host's version lost).
A deletion against a modification keeps the modification.
What it must never do: drop a version, or leave the received temporary file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

from pydesk.sync.fstree import DIR, FILE, Entry, lstat_entry, same
from pydesk.sync.plan import GUEST, HOST, conflict_name, conflict_winner

if TYPE_CHECKING:
    from pydesk.sync.engine import Engine

log = logging.getLogger(__name__)


def resolve_conflict(eng: Engine, path: str, g: Entry | None, temp: str | None) -> None:
    eng.conflicted.discard(path)
    h = lstat_entry(eng.root, path)
    if g is None:
        if h is None:
            eng.agree(path, None)
        else:
            eng.push(h, None)  # the guest lacks it: the host's version stays
        return
    if h is None or same(h, g):
        if install(eng, g, path, temp, h):
            eng.agree(path, g)
        return
    eng.stats.conflicts += 1
    if conflict_winner(h, g) == GUEST:
        loser = conflict_name(path, HOST)
        try:
            os.rename(eng.applier.full(path), eng.applier.full(loser))
        except OSError as e:
            _failed(eng, path, e, temp)
            return
        if install(eng, g, path, temp, None):
            eng.agree(path, g)
        kept = lstat_entry(eng.root, loser)
        if kept is not None:
            eng.push(kept, None)
    else:
        loser = conflict_name(path, GUEST)
        if install(eng, g, loser, temp, None):
            eng.agree(loser, lstat_entry(eng.root, loser))
        eng.put_op({"o": "mv", "p": path, "to": loser, "x": g.wire()})
        eng.push(h, None)
    log.warning("sync conflict on %s: kept the other version as %s", path, loser)


def install(eng: Engine, g: Entry, path: str, temp: str | None, current: Entry | None) -> bool:
    """Puts the guest's version at ``path`` here; False if it could not (then nothing is
    agreed for it, and the next change of either side syncs it again)."""
    try:
        if g.kind == FILE:
            if temp is None:
                return False
            eng.applier.install(temp, path, current)
            return True
        entry = g._replace(path=path)
        if g.kind == DIR:
            return eng.applier.mkdir(entry, current) is None
        return eng.applier.symlink(entry, current) is None
    except OSError as e:
        _failed(eng, path, e, temp)
        return False


def _failed(eng: Engine, path: str, error: OSError, temp: str | None) -> None:
    eng.stats.last_error = f"cannot write {path}: {error}"
    log.warning("sync: %s", eng.stats.last_error)
    if temp is not None:
        with contextlib.suppress(OSError):
            os.unlink(temp)
