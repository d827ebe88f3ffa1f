"""Snapshots: copy-on-write filesystems stacked by parent, as containerd's snapshotter models them.

What it is for: each image layer is unpacked once into a *committed* snapshot named by its
chainID; a container's root filesystem is an *active* snapshot on top of the image's last one;
a read-only *view* gives access to a committed chain. The snapshotter never mounts anything
itself: ``prepare``/``view``/``mounts`` *return* ``Mount`` descriptions that the caller performs
(``snapshots.mount``), exactly like containerd's ``core/snapshots/snapshotter.go``.

Keys and names share one namespace. A snapshot is addressed by its key while ACTIVE or VIEW and
by the name it was committed under once COMMITTED. Only COMMITTED snapshots can be parents.

What it must never do: change a committed snapshot, remove one that has children, or leave a state
after a crash that ``cleanup`` cannot sort out (see ``overlay``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Kind(enum.Enum):
    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"


@dataclass(frozen=True)
class Info:
    """What the snapshotter knows about one snapshot. ``parent`` is "" for none."""

    name: str
    parent: str
    kind: Kind
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Usage:
    """Disk use of one snapshot's own layer (not its parents'): bytes and inodes."""

    size: int
    inodes: int


@dataclass(frozen=True)
class Mount:
    """One mount to perform: ``mount -t TYPE -o OPTIONS SOURCE TARGET``.

    ``target`` is a subdirectory of the caller's target (None: the target itself).
    """

    type: str
    source: str
    target: str | None = None
    options: tuple[str, ...] = ()


class Snapshotter(Protocol):
    """containerd's Snapshotter interface. Every method names the errors it raises."""

    def stat(self, key: str) -> Info:
        """Raises NotFound."""
        ...

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Replace labels (no field paths, or ``labels``) or set/remove ``labels.<key>``.

        Raises NotFound, InvalidArgument (an immutable field, a bad label).
        """
        ...

    def usage(self, key: str) -> Usage:
        """Raises NotFound."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an ACTIVE or VIEW snapshot. Raises NotFound, FailedPrecondition."""
        ...

    def prepare(self, key: str, parent: str = "",
                labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A new ACTIVE snapshot on ``parent`` (a COMMITTED one, or "" for an empty one).

        Raises AlreadyExists (key taken), NotFound (parent), FailedPrecondition (parent not
        committed), InvalidArgument (bad key or labels).
        """
        ...

    def view(self, key: str, parent: str = "",
             labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A new read-only VIEW of ``parent``. Raises like ``prepare``."""
        ...

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turn ACTIVE ``key`` into COMMITTED ``name``; the key is gone afterwards.

        Raises NotFound, AlreadyExists (name taken), FailedPrecondition (not ACTIVE).
        """
        ...

    def remove(self, key: str) -> None:
        """Remove a snapshot. Raises NotFound, FailedPrecondition (it has children)."""
        ...

    def walk(self, fn: Callable[[Info], None], filters: Sequence[str] = ()) -> None:
        """Call ``fn`` for each snapshot matching any filter (all if none).

        Filters: ``name==X``, ``parent==X``, ``kind==active|view|committed``, ``labels.K``,
        ``labels.K==V``. Raises InvalidArgument for a filter it cannot parse.
        """
        ...

    def cleanup(self) -> None:
        """Remove on-disk leftovers the metadata does not know (crash debris)."""
        ...
