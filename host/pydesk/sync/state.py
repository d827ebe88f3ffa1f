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


class StateFile:
    def __init__(self, path: Path, root: str) -> None:
        self.path = path
        self.root = root

    def load(self) -> dict[str, Entry]:
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("version") != STATE_VERSION or raw.get("root") != self.root:
                return {}
            entries = (Entry.from_wire(item) for item in raw["entries"])
            return {e.path: e for e in entries}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def save(self, agreed: dict[str, Entry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": STATE_VERSION, "root": self.root,
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
