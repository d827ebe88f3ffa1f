"""The host watcher: watchdog events under a synced root, as relative paths on a queue.

What it is for: the session's thread takes ``("fs", rel, None)`` items off its queue, coalesces
them per path and compares each path with the agreed state; the watcher only says "look at
this path" (both ends of a move). A move it saw (watchdog pairs the two halves of a rename:
inotify's cookie on Linux, the inode with FSEvents) is also noted in the root's :class:`MoveLog`:
the engine sends a ``mv`` instead of the content only for a pair noted there, never for two
files that merely look alike.
What it must never do: decide anything, or block watchdog's thread.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

IGNORED_EVENTS = {"opened", "closed_no_write"}
MOVE_TTL_S = 30.0
"""A move not used by then is stale (its batch was handled without it)."""
MAX_MOVES = 100_000


class MoveLog:
    """Renames seen under one root (new relative path -> old one), shared by the watcher's
    thread and the engine's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._moves: dict[str, tuple[str, float]] = {}

    def add(self, old: str, new: str) -> None:
        with self._lock:
            if len(self._moves) >= MAX_MOVES:
                self._moves.clear()
            self._moves[new] = (old, time.monotonic())

    def take(self, new: str) -> str | None:
        """The path ``new`` was moved from (once), or None."""
        with self._lock:
            found = self._moves.pop(new, None)
        if found is None or time.monotonic() - found[1] > MOVE_TTL_S:
            return None
        return found[0]


_logs: dict[str, MoveLog] = {}
_logs_lock = threading.Lock()


def move_log(root: str) -> MoveLog:
    """The move log of host root ``root`` (the same object for its watcher and its engine:
    they are created apart, by the session)."""
    with _logs_lock:
        return _logs.setdefault(root, MoveLog())


class Watcher(FileSystemEventHandler):
    def __init__(self, root: str, out: queue.Queue[tuple[str, Any, Any]]) -> None:
        self.root = root
        self.out = out
        self.moves = move_log(root)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in IGNORED_EVENTS:
            return
        rels = [self._rel(raw) for raw in (event.src_path, getattr(event, "dest_path", ""))]
        if event.event_type == "moved" and rels[0] and rels[1]:
            self.moves.add(rels[0], rels[1])
        for rel in rels:
            if rel:
                self.out.put(("fs", rel, None))

    def _rel(self, raw: str | bytes) -> str:
        """The path relative to the root, '/'-separated; "" for the root or outside it."""
        path = os.fsdecode(raw)
        if not path:
            return ""
        rel = os.path.relpath(path, self.root)
        if rel in (".", "..") or rel.startswith(".." + os.sep):  # a name "..x" is inside
            return ""
        return rel.replace(os.sep, "/")


def start_observer(root: str, out: queue.Queue[tuple[str, Any, Any]], *,
                   recursive: bool) -> Any:
    """A started watchdog observer (``stop()`` and ``join()`` it)."""
    observer = Observer()
    observer.schedule(Watcher(root, out), root, recursive=recursive)
    observer.daemon = True
    observer.start()
    return observer
