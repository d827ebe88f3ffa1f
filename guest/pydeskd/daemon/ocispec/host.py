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

    def bounding_set(self) -> int | None:
        """The daemon's capability bounding set (a bit mask), or None if unknown. As moby's
        ``caps.GetAllCapabilities``, "all capabilities" means all this process could grant: a
        daemon in a restricted environment cannot give a container what it lacks itself."""


def _node(path: str, info: os.stat_result) -> DeviceNode | None:
    if stat.S_ISCHR(info.st_mode):
        kind = "c"
    elif stat.S_ISBLK(info.st_mode):
        kind = "b"
    else:
        return None
    return DeviceNode(kind, path, os.major(info.st_rdev), os.minor(info.st_rdev),
                      stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)


class RealHost:
    """:class:`HostView` of the machine the daemon runs on."""

    def device(self, path: str) -> DeviceNode | None:
        # ``--device /dev/disk/by-id/x``: Docker resolves a symlink first.
        return _node(path, os.stat(path))

    def devices_under(self, path: str) -> list[DeviceNode]:
        # containerd's getDevices: entries in name order, directories walked in place,
        # symlinks and non-devices skipped (lstat), pts/shm/fd/mqueue/... and console left out.
        found: list[DeviceNode] = []
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            try:
                info = os.lstat(full)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if name not in _SKIP_DEV_DIRS:
                    found += self.devices_under(full)
            elif name != "console":
                node = _node(full, info)
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

    def bounding_set(self) -> int | None:
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("CapBnd:"):
                        return int(line.split()[1], 16)
        except OSError:
            pass
        return None

    def kernel(self) -> tuple[int, int]:
        parts = platform.release().split(".")
        try:
            return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
        except (IndexError, ValueError):
            return (0, 0)
