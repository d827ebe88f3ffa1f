"""Unmounting the data disk at shutdown, whatever still holds it.

What it is for: :func:`unmount_data` leaves the data filesystem consistent on disk before the
guest powers off: everything mounted under it is unmounted (or detached), and the data mount is
unmounted or at least remounted read-only. What it must never do: power off, or give up on the
data mount before trying read-only.
"""

from __future__ import annotations

from pydeskd import vmcontract
from pydeskd.guestinit import plan
from pydeskd.guestinit.system import MNT_DETACH, MS_RDONLY, MS_REMOUNT, System


def unmount_data(s: System) -> bool:
    """Everything mounted at or under the data mount, deepest first; True when the data
    filesystem was unmounted or at least made read-only (consistent on disk)."""
    try:
        points = plan.mounts_under(s.read("/proc/self/mountinfo").decode(),
                                   vmcontract.DATA_MOUNT)
    except OSError:
        points = [vmcontract.DATA_MOUNT]
    for point in points:
        try:
            s.umount(point)
        except OSError as e:
            if point != vmcontract.DATA_MOUNT:
                s.log(f"{e}: detached")
                detach(s, point)
                continue
            s.log(f"{e}: remounting read-only")
            try:
                s.mount("", point, "", MS_REMOUNT | MS_RDONLY)
            except OSError as e2:
                s.log(f"{e2}")
                return False
            detach(s, point)
    return True


def detach(s: System, point: str) -> None:
    try:
        s.umount(point, MNT_DETACH)
    except OSError as e:
        s.log(f"{e}")
