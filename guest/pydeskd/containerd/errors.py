"""Errors of the containerd layer: a small hierarchy the daemon maps to HTTP statuses in one place.

Modelled on containerd's errdefs sentinels: callers test the *kind* of failure
(``except NotFound``), never the message. Nothing here may carry secrets (credentials,
tokens) in its message, because the daemon returns messages to API clients verbatim.
"""

from __future__ import annotations


class ContainerdError(Exception):
    """Base of every error the containerd layer raises on purpose."""


class NotFound(ContainerdError):
    """The named object (blob, ingest, snapshot, image) does not exist. HTTP 404."""


class AlreadyExists(ContainerdError):
    """The object already exists; nothing was changed. HTTP 409."""


class InvalidArgument(ContainerdError):
    """The request is malformed (bad digest, bad label, unknown field path). HTTP 400."""


class FailedPrecondition(ContainerdError):
    """Well formed, but the state forbids it (e.g. a size or digest mismatch). HTTP 409."""


class Unavailable(ContainerdError):
    """The object is busy (e.g. an ingest ref locked by another writer); retry later. HTTP 503."""


class Unauthorized(ContainerdError):
    """A registry refused the credentials (or wants some): HTTP 401 as Docker reports it."""


class NotModified(ContainerdError):
    """Nothing to do: the object is already in the asked state (starting a running container,
    stopping a stopped one). HTTP 304, with no body, as Docker replies."""
