"""The interface every cgroup implementation (v1, v2) offers the runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pydeskd.runtime.spec import Resources


class Cgroup(Protocol):
    """One container's cgroup (one directory per v1 hierarchy, or one v2 directory)."""

    version: int

    def create(self, resources: Resources) -> None:
        """Makes the directories and writes the limits; SetupFailed, leaving nothing, on error."""

    def add_process(self, pid: int) -> None:
        """Moves ``pid`` into the cgroup (every hierarchy on v1)."""

    def pids(self) -> list[int]:
        """The processes in the cgroup; empty if it does not exist (any more)."""

    def freeze(self) -> None:
        """Freezes every process, returning once the kernel reports the cgroup frozen."""

    def thaw(self) -> None:
        """Thaws the cgroup."""

    def is_frozen(self) -> bool:
        """True when the cgroup is frozen."""

    def destroy(self) -> None:
        """Removes the directories create() made (leaf first); idempotent."""

    def owns_leaf(self) -> bool:
        """True if create() made the container's directory in every hierarchy (then every
        process in it belongs to the container)."""

    def to_state(self) -> dict[str, object]:
        """JSON-able description for :func:`restore_cgroup`."""
