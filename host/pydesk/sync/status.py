"""What a sync session reports about itself: its state and counters (``pydesk doctor``).

What it is for: :class:`State` names a session's life (a failed one is started again by the
manager), :class:`SessionStatus` is the snapshot ``SyncManager.status()`` returns.
What it must never do: hold anything live (plain values only).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    STARTING = "starting"
    SYNCING = "syncing"
    LIVE = "live"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class SessionStatus:
    host_root: str
    guest_root: str
    state: str
    entries: int
    pushed: int
    pulled: int
    conflicts: int
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    first_sync_s: float
    error: str
