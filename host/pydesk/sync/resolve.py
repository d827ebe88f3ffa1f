"""Conflict resolution: both sides changed a path since they last agreed on it.

What it is for: :func:`resolve_conflict` applies the rule of ``plan`` with the guest's version
in hand (received into a temporary file beside the path): the newer mtime wins and takes the
name; the other version is kept beside it as ``NAME.pydesk-conflict-<side>-<UTC time>[-N]``, on
the host here and in the guest by a ``mv`` (guest's version lost) or a push (host's version
lost). A deletion against a modification keeps the modification.
What it must never do: drop a version, replace an existing conflict copy (a name already taken,
by a conflict in the same second for instance, gets the next number, and every move here
refuses to replace: link() or a check), or leave the received temporary file behind.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from pydesk.sync.plan import GUEST, HOST, conflict_name, conflict_winner
from pydeskd.syncd.fstree import DIR, FILE, Entry, UnsafePath, lstat_entry, same

if TYPE_CHECKING:
    from pydesk.sync.engine import Engine

log = logging.getLogger(__name__)

MAX_NAMES = 1000
"""Conflict copies of one path in one second before giving up (then reported)."""


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
    now = time.time()
    if conflict_winner(h, g) == GUEST:
        loser = _move_aside(eng, path, h, now)
        if loser is None:
            _failed(eng, path, OSError(f"no free conflict name for {path!r}, or it changed"),
                    temp)
            return
        if install(eng, g, path, temp, None):
            eng.agree(path, g)
        kept = lstat_entry(eng.root, loser)
        if kept is not None:
            eng.push(kept, None)
    else:
        loser = _install_aside(eng, g, path, temp, now)
        eng.put_op({"o": "mv", "p": path, "to": loser, "x": g.wire()})
        eng.push(h, None)
    log.warning("sync conflict on %s: kept the other version as %s", path, loser)


def _free_names(eng: Engine, path: str, side: str, now: float) -> list[str]:
    """Conflict names for ``path`` not taken here now, in order (a few: each attempt to take
    one may find it taken meanwhile and go on to the next)."""
    names: list[str] = []
    for n in range(1, MAX_NAMES + 1):
        name = conflict_name(path, side, now, n)
        if lstat_entry(eng.root, name) is None:
            names.append(name)
            if len(names) == 3:
                break
    return names


def _move_aside(eng: Engine, path: str, h: Entry, now: float) -> str | None:
    """Renames the host's version ``h`` of ``path`` to a free conflict name; None if ``path``
    changed meanwhile or no name is free."""
    for name in _free_names(eng, path, HOST, now):
        rejected = eng.applier.rename(path, name, h)
        if rejected is None:
            return name
        if not same(rejected.current, h):
            return None  # changed meanwhile: its event comes
    return None


def _install_aside(eng: Engine, g: Entry, path: str, temp: str | None, now: float) -> str:
    """Puts the guest's version at a free conflict name here; returns that name (also when it
    could not be written: the guest then still keeps its version under it)."""
    names = _free_names(eng, path, GUEST, now) or [conflict_name(path, GUEST, now, MAX_NAMES)]
    for name in names:
        try:
            if _install(eng, g, name, temp, None):
                eng.agree(name, lstat_entry(eng.root, name))
            return name
        except FileExistsError:
            continue  # taken meanwhile: the next one
        except (OSError, UnsafePath) as e:
            _failed(eng, name, e, temp)
            return name
    _failed(eng, path, OSError("every conflict name is taken"), temp)
    return names[-1]


def install(eng: Engine, g: Entry, path: str, temp: str | None, current: Entry | None) -> bool:
    """Puts the guest's version at ``path`` here; False if it could not (then nothing is
    agreed for it, and the next change of either side syncs it again)."""
    try:
        return _install(eng, g, path, temp, current)
    except (OSError, UnsafePath) as e:
        _failed(eng, path, e, temp)
        return False


def _install(eng: Engine, g: Entry, path: str, temp: str | None, current: Entry | None) -> bool:
    if g.kind == FILE:
        if temp is None:
            return False
        eng.applier.install(temp, path, current)
        return True
    entry = g._replace(path=path)
    if g.kind == DIR:
        return eng.applier.mkdir(entry, current) is None
    return eng.applier.symlink(entry, current) is None


def _failed(eng: Engine, path: str, error: Exception, temp: str | None) -> None:
    eng.stats.last_error = f"cannot write {path}: {error}"
    log.warning("sync: %s", eng.stats.last_error)
    if temp is not None:
        with contextlib.suppress(OSError, UnsafePath):
            eng.applier.discard(temp)
