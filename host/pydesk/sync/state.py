"""The agreed manifest of each synced root, kept on the host between agent runs.

What it is for: after an agent restart, a session compares both sides with the last agreed state
to tell which side changed a path (see ``plan``), so only what changed is sent again. One JSON
file per root in the state dir, named by the same key as the guest copy, written atomically.
What it must never do: be trusted blindly — a missing, unreadable or foreign file means "no
agreed state" (the first sync then only transfers differences, and keeps both versions of a path
that differs on both sides).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from pydesk.sync.fstree import Entry

STATE_VERSION = 1


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


class StateFile:
    def __init__(self, path: Path, root: str, only: str | None = None) -> None:
        self.path = path
        self.root = root
        self.only = only

    def load(self) -> dict[str, Entry]:
        try:
            raw = json.loads(self.path.read_text())
            if (raw.get("version") != STATE_VERSION or raw.get("root") != self.root
                    or raw.get("only") != self.only):
                return {}
            entries = (Entry.from_wire(item) for item in raw["entries"])
            return {e.path: e for e in entries}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def save(self, agreed: dict[str, Entry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": STATE_VERSION, "root": self.root, "only": self.only,
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
