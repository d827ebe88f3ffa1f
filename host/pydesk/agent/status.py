"""The agent's status events: one JSON object per line in the instance's status.jsonl.

What it is for: the agent appends ``{"time", "state", "message", "error"}`` lines as the VM goes
through starting -> running (<-> degraded) -> stopping -> stopped; the CLI follows them (start
shows progress, status shows the last one). One ``write`` of one line with O_APPEND, so readers
never see half a line from a writer that is alive.
What it must never do: rewrite earlier lines (the history is what explains a crash).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StatusEvent:
    time: str
    state: State
    message: str
    error: str = ""

    @classmethod
    def now(cls, state: State, message: str, error: str = "") -> StatusEvent:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(stamp, state, message, error)

    def to_line(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes | str) -> StatusEvent:
        data = json.loads(line)
        return cls(str(data["time"]), State(data["state"]), str(data.get("message", "")),
                   str(data.get("error") or ""))


def append_status(path: Path, event: StatusEvent) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, event.to_line())
    finally:
        os.close(fd)


def read_status(path: Path, offset: int = 0) -> tuple[list[StatusEvent], int]:
    """Complete events from ``offset`` on, and the offset after the last complete line."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    events = []
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        try:
            events.append(StatusEvent.from_line(line))
        except (ValueError, KeyError):
            continue  # a damaged line (disk full?) must not hide the next ones
    return events, offset + end


def last_status(path: Path) -> StatusEvent | None:
    events, _ = read_status(path)
    return events[-1] if events else None


def status_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def follow_status(path: Path, offset: int, *, timeout: float,
                  poll: float = 0.1) -> Iterator[StatusEvent]:
    """Yields events appended after ``offset`` until ``timeout`` seconds pass without one ending
    the caller's interest (the caller stops iterating when it has seen enough)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events, offset = read_status(path, offset)
        yield from events
        if not events:
            time.sleep(poll)
