"""The host watcher: watchdog events under a synced root, as relative paths on a queue.

What it is for: the session's thread takes ``("fs", rel, None)`` items off its queue, coalesces
them per path and compares each path with the agreed state; the watcher only says "look at
this path" (both ends of a move).
What it must never do: decide anything, or block watchdog's thread.
"""

from __future__ import annotations

import os
import queue
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

IGNORED_EVENTS = {"opened", "closed_no_write"}


class Watcher(FileSystemEventHandler):
    def __init__(self, root: str, out: queue.Queue[tuple[str, Any, Any]]) -> None:
        self.root = root
        self.out = out

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in IGNORED_EVENTS:
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw)
            if not path:
                continue
            rel = os.path.relpath(path, self.root)
            if rel != "." and not rel.startswith(".."):
                self.out.put(("fs", rel.replace(os.sep, "/"), None))


def start_observer(root: str, out: queue.Queue[tuple[str, Any, Any]], *,
                   recursive: bool) -> Any:
    """A started watchdog observer (``stop()`` and ``join()`` it)."""
    observer = Observer()
    observer.schedule(Watcher(root, out), root, recursive=recursive)
    observer.daemon = True
    observer.start()
    return observer
