"""Engine API versions: the ``/v1.NN`` path prefix, the supported range, Docker's messages.

What it is for: one place that knows which API versions pydeskd speaks and how a request names
one. Both the HTTP front (hijacked routes) and the FastAPI app (every other route) use it, so a
version error reads the same on every path.

What it must never do: touch the request beyond its path; it is pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from pydeskd.containerd.errors import InvalidArgument


@total_ordering
@dataclass(frozen=True)
class ApiVersion:
    major: int
    minor: int

    @staticmethod
    def parse(text: str) -> ApiVersion:
        """``"1.45"`` -> ApiVersion(1, 45); InvalidArgument for anything else."""
        match = re.fullmatch(r"(\d{1,4})\.(\d{1,4})", text)
        if match is None:
            raise InvalidArgument(f"invalid API version {text!r}: want MAJOR.MINOR such as 1.45")
        return ApiVersion(int(match[1]), int(match[2]))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ApiVersion):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


# The oldest API the daemon serves: older clients were written for a daemon with a different
# image store and container model (1.41 is Docker 20.10's).
MIN_API_VERSION = ApiVersion(1, 41)
# The newest: what the docker CLI 28.x on this system negotiates (its client speaks 1.50).
CURRENT_API_VERSION = ApiVersion(1, 50)

# Docker's router accepts ``/v{version}`` with digits and dots; anything else is just a path.
_PREFIX = re.compile(r"^/v([0-9][0-9.]*)(?=/|$)")


@dataclass(frozen=True)
class VersionedPath:
    """A request path split into the API version it asked for (None: unprefixed) and the rest."""

    version: ApiVersion | None
    path: str


def split_version(path: str) -> VersionedPath:
    """Split ``/v1.45/containers/json`` into (1.45, ``/containers/json``).

    Raises InvalidArgument for a malformed version (``/v1/...``), as Docker's router would not
    route it either.
    """
    match = _PREFIX.match(path)
    if match is None:
        return VersionedPath(None, path)
    rest = path[match.end():] or "/"
    return VersionedPath(ApiVersion.parse(match[1]), rest)


def check_version(version: ApiVersion | None) -> ApiVersion:
    """The version a request is served at; InvalidArgument with Docker's text when out of range.

    An unprefixed path is served at the current version, as Docker does.
    """
    if version is None:
        return CURRENT_API_VERSION
    if version > CURRENT_API_VERSION:
        raise InvalidArgument(f"client version {version} is too new. Maximum supported API "
                              f"version is {CURRENT_API_VERSION}")
    if version < MIN_API_VERSION:
        raise InvalidArgument(f"client version {version} is too old. Minimum supported API "
                              f"version is {MIN_API_VERSION}, please upgrade your client to a "
                              f"newer version")
    return version
