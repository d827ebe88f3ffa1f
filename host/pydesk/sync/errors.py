"""Errors of bind-mount sync, each with a one-line message and a hint for the user.

What it is for: the API proxy turns these into Engine API errors (a missing bind source is a
400, as dockerd says "invalid mount config"); ``pydesk doctor`` shows them from the status.
What it must never do: import anything beyond the standard library.
"""

from __future__ import annotations


class SyncError(Exception):
    """A sync session failed or could not start; ``status`` is the HTTP status for the proxy."""

    status = 500

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class HostPathNotFound(SyncError):
    """The host path of a bind mount does not exist."""

    status = 400


class UnsupportedPath(SyncError):
    """The host path is neither a directory nor a regular file (socket, device...)."""

    status = 400


class SessionFailed(SyncError):
    """The guest side died, broke the protocol, or the first sync timed out."""


class ProtectedPath(SyncError):
    """The host path is inside pydesk's own directory (``~/.pydesk``), which is never synced."""

    status = 400
