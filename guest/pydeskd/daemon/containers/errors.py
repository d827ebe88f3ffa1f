"""Errors of the containers layer, beyond containerd's (NotFound, InvalidArgument, ...).

``Conflict`` is Docker's errdefs.Conflict (HTTP 409: remove a running container, a name in use);
``NotModified`` is HTTP 304 (start a running container, stop a stopped one). Stand-ins until
the daemon's own error module carries them; the API maps them by class, never by message.
"""

from __future__ import annotations

from pydeskd.containerd.errors import ContainerdError, FailedPrecondition


class Conflict(FailedPrecondition):
    """The object's state forbids the request. HTTP 409."""


class NotModified(ContainerdError):
    """Nothing to do: the container is already in the wanted state. HTTP 304."""


class StartError(ContainerdError):
    """The runtime could not start the container (Docker answers 500, or 400 for a bad cmd)."""
