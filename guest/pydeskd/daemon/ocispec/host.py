"""The one seam through which the spec builder looks at the host.

Docker's spec depends on a few host facts: the device node behind ``--device`` (and every
device for ``--privileged``), whether a sysctl exists, which thermal_throttle directories
to mask, the machine and the kernel version (seccomp). :class:`HostView` names them;
:class:`RealHost` reads them (tested as root in tests/integration/ocispec); unit tests pass
a fake. Nothing here changes the host.
"""

from __future__ import annotations

import os
import platform
import stat
from dataclasses import dataclass
from typing import Protocol

from pydeskd.runtime.capabilities import last_cap

# Directories of /dev that hold no device the container should get (containerd's list).
_SKIP_DEV_DIRS = frozenset(("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"))


@dataclass(frozen=True)
class DeviceNode:
    """A device node as ``linux.devices`` lists it; ``path`` is where the container sees it."""

    type: str  # "c" or "b"
    path: str
    major: int
    minor: int
    file_mode: int
    uid: int
    gid: int

    def to_oci(self) -> dict[str, object]:
        return {"path": self.path, "type": self.type, "major": self.major,
                "minor": self.minor, "fileMode": self.file_mode, "uid": self.uid,
                "gid": self.gid}


class HostView(Protocol):
    def device(self, path: str) -> DeviceNode | None:
        """The node at ``path`` (symlinks followed), None if it is not a device node;
        raises OSError if it does not exist."""

    def devices_under(self, path: str) -> list[DeviceNode]:
        """Every device node below directory ``path`` (host paths), sorted."""

    def sysctl_exists(self, name: str) -> bool: ...

    def path_exists(self, path: str) -> bool: ...

    def cpu_count(self) -> int: ...

    def machine(self) -> str: ...

    def kernel(self) -> tuple[int, int]: ...

    def last_cap(self) -> int:
        """The highest capability number the kernel knows."""


class RealHost:
    """:class:`HostView` of the machine the daemon runs on."""

    def device(self, path: str) -> DeviceNode | None:
        info = os.stat(path)
        if stat.S_ISCHR(info.st_mode):
            kind = "c"
        elif stat.S_ISBLK(info.st_mode):
            kind = "b"
        else:
            return None
        return DeviceNode(kind, path, os.major(info.st_rdev), os.minor(info.st_rdev),
                          stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)

    def devices_under(self, path: str) -> list[DeviceNode]:
        found: list[DeviceNode] = []
        for top, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not (top == path and d in _SKIP_DEV_DIRS))
            for name in sorted(files):
                if top == path and name == "console":
                    continue  # the container's console is its own pty
                try:
                    node = self.device(os.path.join(top, name))
                except OSError:
                    continue
                if node is not None:
                    found.append(node)
        return found

    def sysctl_exists(self, name: str) -> bool:
        return os.path.exists("/proc/sys/" + name.replace(".", "/"))

    def path_exists(self, path: str) -> bool:
        return os.path.exists(path)

    def cpu_count(self) -> int:
        return os.cpu_count() or 1

    def machine(self) -> str:
        return platform.machine()

    def last_cap(self) -> int:
        return last_cap()

    def kernel(self) -> tuple[int, int]:
        parts = platform.release().split(".")
        try:
            return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
        except (IndexError, ValueError):
            return (0, 0)
