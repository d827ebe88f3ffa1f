"""Progress of long image work (pull, push, load), as events the daemon renders for clients.

What it is for: the containerd layer reports what happens to each blob; the daemon turns these
events into Docker's JSON progress stream (``{"status": "Downloading", "progressDetail":
{"current": N, "total": M}, "id": "a1b2c3d4e5f6"}``). The statuses and their order per layer are
Docker's: Waiting -> Downloading (with bytes) -> Verifying Checksum -> Download complete ->
Extracting (with bytes) -> Pull complete, or "Already exists" for a layer that is already there.

What it must never do: block the work it reports on (a reporter is called inline and must be
quick), or carry secrets (events reach API clients verbatim).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass


class Status(enum.Enum):
    """One step of one blob's progress; the value is the text Docker's CLI shows."""

    RESOLVING = "Resolving"
    WAITING = "Waiting"
    DOWNLOADING = "Downloading"
    VERIFYING = "Verifying Checksum"
    DOWNLOAD_COMPLETE = "Download complete"
    EXTRACTING = "Extracting"
    PULL_COMPLETE = "Pull complete"
    ALREADY_EXISTS = "Already exists"
    PREPARING = "Preparing"
    PUSHING = "Pushing"
    PUSHED = "Pushed"
    MOUNTED = "Mounted from"
    LAYER_EXISTS = "Layer already exists"
    LOADING = "Loading layer"


@dataclass(frozen=True)
class Event:
    """``digest`` is the blob's full digest; ``id`` is the 12-hex short form Docker shows."""

    digest: str
    status: Status
    current: int = 0
    total: int = 0
    detail: str = ""

    @property
    def id(self) -> str:
        return self.digest.split(":", 1)[-1][:12]


Reporter = Callable[[Event], None]


def discard(event: Event) -> None:
    """A reporter that drops every event."""


class Collector:
    """A thread-safe reporter that keeps every event (for tests and for the load API)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def statuses(self, digest: str) -> list[Status]:
        with self._lock:
            return [e.status for e in self.events if e.digest == digest]
