"""The agreed manifest of each synced root, kept on the host between agent runs.

What it is for: after an agent restart, a session compares both sides with the last agreed state
to tell which side changed a path (see ``plan``), so only what changed is sent again. One JSON
file per root in the state dir, named by the same key as the guest copy, written atomically.
The state names the guest copy it was agreed with (its identity: a random id and the
generation the guest made durable before the save); the session trusts it only for that copy,
at that generation or newer. A ``.used`` marker beside it records when a container last asked
for the root (or the sync last carried a change): ``resume`` restarts only recently used roots.
What it must never do: be trusted blindly — a missing, unreadable or foreign file means "no
agreed state" (the first sync then only transfers differences, and keeps both versions of a path
that differs on both sides).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydeskd.syncd.fstree import Entry

STATE_VERSION = 1


@dataclass(frozen=True)
class Saved:
    """What a state file holds: the agreed entries and the guest copy they were agreed with
    (``copy_id`` "" and ``gen`` 0 for none: a file from before copies had an identity)."""

    entries: dict[str, Entry] = field(default_factory=dict)
    copy_id: str = ""
    gen: int = 0


def read_root(path: Path) -> tuple[str, str | None] | None:
    """(root, only) that a state file is about, or None if it is not one of ours: lets a new
    agent resume the sessions of the previous one."""
    try:
        with path.open() as f:
            raw = json.loads(f.read())
        if raw.get("version") != STATE_VERSION or not isinstance(raw.get("root"), str):
            return None
        only = raw.get("only")
        return raw["root"], only if isinstance(only, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def last_used(path: Path) -> float:
    """When the root of state file ``path`` was last used (epoch seconds): its ``.used``
    marker, else (a state from before the markers) the state file's own time; 0 if neither."""
    for candidate in (path.with_suffix(".used"), path):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


class StateFile:
    def __init__(self, path: Path, root: str, only: str | None = None) -> None:
        self.path = path
        self.root = root
        self.only = only

    @property
    def used_marker(self) -> Path:
        return self.path.with_suffix(".used")

    def load(self) -> dict[str, Entry]:
        return self.read().entries

    def read(self) -> Saved:
        try:
            raw = json.loads(self.path.read_text())
            if (raw.get("version") != STATE_VERSION or raw.get("root") != self.root
                    or raw.get("only") != self.only):
                return Saved()
            entries = (Entry.from_wire(item) for item in raw["entries"])
            copy_id, gen = raw.get("copy_id", ""), raw.get("gen", 0)
            return Saved({e.path: e for e in entries},
                         copy_id if isinstance(copy_id, str) else "",
                         gen if isinstance(gen, int) else 0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return Saved()

    def mark_used(self) -> None:
        """Records that the root is in use now (best effort: a failure only makes a later
        ``resume`` skip the root, which the next use of it undoes)."""
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.used_marker.touch()

    def save(self, agreed: dict[str, Entry], copy_id: str = "", gen: int = 0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": STATE_VERSION, "root": self.root, "only": self.only,
                           "copy_id": copy_id, "gen": gen,
                           "entries": [e.wire() for e in agreed.values()]},
                          separators=(",", ":"))
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):  # the temp file must not linger
                os.unlink(temp)
            raise
