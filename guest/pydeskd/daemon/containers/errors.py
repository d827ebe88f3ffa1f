"""Errors of the containers layer, beyond containerd's (NotFound, InvalidArgument, ...).

``Conflict`` is Docker's errdefs.Conflict (HTTP 409: remove a running container, a name in use);
``NotModified`` (HTTP 304: start a running container, stop a stopped one) is the daemon-wide
one from :mod:`pydeskd.containerd.errors`, re-exported. ``StartFailed`` is a runtime refusal
(HTTP 500); ``CommandNotRunnable`` a command that cannot be run (HTTP 400, as Docker answers
for "executable file not found"). The API maps them by class, never by message.
"""

from __future__ import annotations

from pydeskd.containerd.errors import (
    ContainerdError,
    FailedPrecondition,
    InvalidArgument,
    NotModified,
)

__all__ = ["CommandNotRunnable", "Conflict", "NotModified", "StartFailed"]


class Conflict(FailedPrecondition):
    """The object's state forbids the request. HTTP 409."""


class StartFailed(ContainerdError):
    """The runtime could not start the container. HTTP 500."""


class CommandNotRunnable(StartFailed, InvalidArgument):
    """The command is missing or not executable. HTTP 400 (the CLI then exits 127 or 126)."""
