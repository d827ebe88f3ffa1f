"""Which cgroup layout is mounted under a root, read from mountinfo text (injectable for tests).

cgroup2 mounted at the root itself is the unified layout (v2). Otherwise the v1 hierarchies
mounted directly below the root are used; a cgroup2 beside them (``root/unified``, the "hybrid"
layout) carries no limits but is joined, as runc 1.1 does. This module only reads.
"""

from __future__ import annotations

import os
import re

from pydeskd.runtime.errors import SetupFailed

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from pydeskd.runtime.record import NamedTuple

# The v1 controllers runc puts a container in, and the one named hierarchy it joins.
V1_CONTROLLERS = frozenset({
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
    "net_cls", "net_prio", "perf_event", "rdma", "misc", "name=systemd",
})
_OCTAL = re.compile(r"\\([0-7]{3})")


class MountEntry(NamedTuple):
    """One cgroup mount from mountinfo."""

    mountpoint: str
    root: str  # the directory of the hierarchy that is mounted (not "/" inside a cgroupns)
    fstype: str  # "cgroup" or "cgroup2"
    super_options: tuple[str, ...]

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(o for o in self.super_options if o in V1_CONTROLLERS)


class Layout(NamedTuple):
    version: int  # 1 (v1 or hybrid) or 2 (unified)
    mounts: tuple[MountEntry, ...]  # v2: the one unified mount; v1: one per hierarchy
    hybrid: MountEntry | None = None  # v1 only: the cgroup2 at root/unified, if mounted


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The cgroup and cgroup2 mounts in mountinfo ``text``, later mounts last."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(MountEntry(
            mountpoint=_unescape(fields[4]), root=_unescape(fields[3]), fstype=fstype,
            super_options=tuple(o for o in fields[sep + 3].split(",") if o not in ("rw", "ro"))))
    return mounts


def detect_layout(root: str = "/sys/fs/cgroup", mountinfo: str | None = None) -> Layout:
    """The layout under ``root``; raises :class:`SetupFailed` if no usable cgroup is there."""
    root = os.path.normpath(root)
    text = read_text("/proc/self/mountinfo") if mountinfo is None else mountinfo
    by_point: dict[str, MountEntry] = {}
    for entry in parse_mountinfo(text):
        by_point[entry.mountpoint] = entry  # a later mount on the same point hides the earlier
    at_root = by_point.get(root)
    if at_root is not None and at_root.fstype == "cgroup2":
        return Layout(2, (at_root,))
    v1 = tuple(e for p, e in sorted(by_point.items())
               if e.fstype == "cgroup" and os.path.dirname(p) == root and e.controllers)
    if v1:
        beside = by_point.get(os.path.join(root, "unified"))
        return Layout(1, v1, beside if beside is not None and beside.fstype == "cgroup2" else None)
    raise SetupFailed(f"no cgroup hierarchy is mounted at or under {root}")


def own_cgroups(text: str) -> dict[str, str]:
    """/proc/self/cgroup as controller -> path ("" is the v2 hierarchy, "name=systemd" kept)."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            own[""] = path
        for controller in controllers.split(","):
            if controller:
                own[controller] = path
    return own


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


class Hierarchy(NamedTuple):
    """A host hierarchy, as the container's "cgroup" mount should present it.

    ``name`` is the directory under the container's /sys/fs/cgroup ("" for v2, which is mounted
    on /sys/fs/cgroup itself); ``options`` is the mount data (e.g. ("cpu", "cpuacct")).
    """

    name: str
    mountpoint: str
    version: int
    options: tuple[str, ...]
