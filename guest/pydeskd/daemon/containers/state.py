"""A container's State (Docker's inspect ``State``) and the legal moves between its statuses.

What it is for: one explicit state machine (as youki's ``can_start``/``can_kill``), so every
lifecycle call checks the same rules and an illegal move is a clear :class:`Conflict` (HTTP 409)
rather than a silent no-op. The record is mutable: callers change it only under the container's
lock. This module is pure; it must never do I/O.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from pydeskd.shim.jsonlog import rfc3339nano

from .errors import Conflict

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as Docker prints an unset time


def now() -> str:
    return rfc3339nano(time.time_ns())


class Status(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


@dataclass
class State:
    status: Status = Status.CREATED
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = False
    removal_in_progress: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    health: dict[str, Any] | None = None

    # --- moves ----------------------------------------------------------------------------

    def set_running(self, pid: int, started_at: str | None = None) -> None:
        self.status = Status.RUNNING
        self.running, self.paused, self.restarting, self.dead = True, False, False, False
        self.oom_killed = False
        self.pid, self.exit_code, self.error = pid, 0, ""
        self.started_at = started_at or now()

    def set_stopped(self, exit_code: int, finished_at: str | None = None,
                    oom_killed: bool = False, error: str = "") -> None:
        self.status = Status.EXITED
        self.running, self.paused, self.restarting = False, False, False
        self.pid, self.exit_code, self.oom_killed, self.error = 0, exit_code, oom_killed, error
        self.finished_at = finished_at or now()

    def set_restarting(self, exit_code: int, finished_at: str | None = None,
                       oom_killed: bool = False) -> None:
        """Exited, and the restart policy will start it again (Docker keeps Running true)."""
        self.set_stopped(exit_code, finished_at, oom_killed)
        self.status = Status.RESTARTING
        self.running, self.restarting = True, True

    def set_error(self, message: str) -> None:
        """A start that failed: Docker records the message and exit code 128 (or 127/126)."""
        self.error = message

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.status = Status.PAUSED if paused else Status.RUNNING

    def set_removing(self) -> None:
        self.removal_in_progress = True
        self.status = Status.REMOVING

    def set_dead(self) -> None:
        self.removal_in_progress = False
        self.dead = True
        self.status = Status.DEAD

    # --- checks ---------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """A process is there (running or paused); restarting is not, whatever Running says."""
        return self.running and not self.restarting

    def check_can_start(self, name: str) -> None:
        if self.removal_in_progress or self.dead:
            raise Conflict(f"cannot start container {name}: container is marked for removal "
                           f"and cannot be started")
        if self.paused:
            raise Conflict(f"cannot start a paused container {name}, try unpause instead")

    def check_can_pause(self, cid: str) -> None:
        if not self.is_running:
            raise Conflict(f"Container {cid} is not running")
        if self.paused:
            raise Conflict(f"Container {cid} is already paused")

    def check_can_unpause(self, cid: str) -> None:
        if not self.paused:
            raise Conflict(f"Container {cid} is not paused")

    def check_can_exec(self, cid: str) -> None:
        if not self.is_running:
            raise Conflict(f"container {cid} is not running")
        if self.paused:
            raise Conflict(f"container {cid} is paused, unpause the container before exec")

    # --- JSON -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> State:
        fields = dict(obj)
        fields["status"] = Status(fields.get("status", "created"))
        return cls(**fields)

    def to_inspect(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Status": str(self.status), "Running": self.running, "Paused": self.paused,
            "Restarting": self.restarting, "OOMKilled": self.oom_killed, "Dead": self.dead,
            "Pid": self.pid, "ExitCode": self.exit_code, "Error": self.error,
            "StartedAt": self.started_at, "FinishedAt": self.finished_at,
        }
        if self.health is not None:
            out["Health"] = self.health
        return out

    def summary(self) -> str:
        """``docker ps``'s Status column is built by the caller from this and the times."""
        return str(self.status)
