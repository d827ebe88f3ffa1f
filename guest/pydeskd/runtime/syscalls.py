"""The runtime's one seam to the kernel: every syscall the stdlib lacks, through ctypes.

:class:`Syscalls` is the interface, :class:`LinuxSyscalls` the real thing (tested as root), and
:class:`RecordingSyscalls` records calls so that mount and namespace plans are unit-tested without
root. Failures raise ``OSError`` with the errno and the call's arguments in the message.
Only the runtime's create, exec and init paths import this module (ctypes costs start-up time).
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from typing import NamedTuple, Protocol
else:
    from pydeskd.runtime.record import NamedTuple

    Protocol = object  # Syscalls is an interface for mypy; at run time a plain class

# <sched.h> / <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS, "cgroup": CLONE_NEWCGROUP, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER, "pid": CLONE_NEWPID, "network": CLONE_NEWNET,
}
# The file under /proc/PID/ns/ for each namespace type.
NAMESPACE_FILES = {
    "mount": "mnt", "cgroup": "cgroup", "uts": "uts", "ipc": "ipc", "user": "user",
    "pid": "pid", "network": "net",
}

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155  # x86_64
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class CapSets(NamedTuple):
    effective: int
    permitted: int
    inheritable: int


NO_CAPS = CapSets(0, 0, 0)


class Syscalls(Protocol):
    """The syscalls the runtime makes that Python's os module does not offer."""

    def unshare(self, flags: int) -> None: ...
    def setns(self, fd: int, nstype: int) -> None: ...
    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None: ...
    def umount2(self, target: str, flags: int) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def sethostname(self, name: str) -> None: ...
    def setdomainname(self, name: str) -> None: ...
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int: ...
    def capget(self) -> CapSets: ...
    def capset(self, sets: CapSets) -> None: ...


def _errcheck(result: int, call: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")
    return result


class LinuxSyscalls:
    """The real syscalls, through libc."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)

    def unshare(self, flags: int) -> None:
        _errcheck(self._libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")

    def setns(self, fd: int, nstype: int) -> None:
        _errcheck(self._libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)),
                  f"setns({fd}, {nstype:#x})")

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        result = self._libc.mount(
            source.encode() or None, target.encode(), fstype.encode() or None,
            ctypes.c_ulong(flags), data.encode() or None)
        _errcheck(result, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")

    def umount2(self, target: str, flags: int) -> None:
        _errcheck(self._libc.umount2(target.encode(), ctypes.c_int(flags)),
                  f"umount2({target!r}, {flags})")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        result = self._libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), new_root.encode(),
                                    put_old.encode())
        _errcheck(result, f"pivot_root({new_root!r}, {put_old!r})")

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        _errcheck(self._libc.sethostname(raw, ctypes.c_size_t(len(raw))),
                  f"sethostname({name!r})")

    def setdomainname(self, name: str) -> None:
        raw = name.encode()
        _errcheck(self._libc.setdomainname(raw, ctypes.c_size_t(len(raw))),
                  f"setdomainname({name!r})")

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int:
        args = [ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5)]
        return _errcheck(self._libc.prctl(ctypes.c_int(option), *args),
                         f"prctl({option}, {arg2}, {arg3})")

    def capget(self) -> CapSets:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        _errcheck(self._libc.syscall(ctypes.c_long(_SYS_CAPGET), ctypes.byref(header), data),
                  "capget")
        return CapSets(
            effective=data[0].effective | data[1].effective << 32,
            permitted=data[0].permitted | data[1].permitted << 32,
            inheritable=data[0].inheritable | data[1].inheritable << 32,
        )

    def capset(self, sets: CapSets) -> None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in (0, 1):
            shift = 32 * i
            data[i].effective = (sets.effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (sets.permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (sets.inheritable >> shift) & 0xFFFFFFFF
        _errcheck(self._libc.syscall(ctypes.c_long(_SYS_CAPSET), ctypes.byref(header), data),
                  f"capset({sets})")


class RecordingSyscalls:
    """Records every call instead of making it; for unit tests of plans. Fails nothing."""

    def __init__(self, caps: CapSets = NO_CAPS) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.caps = caps

    def unshare(self, flags: int) -> None:
        self.calls.append(("unshare", flags))

    def setns(self, fd: int, nstype: int) -> None:
        self.calls.append(("setns", fd, nstype))

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.calls.append(("mount", source, target, fstype, flags, data))

    def umount2(self, target: str, flags: int) -> None:
        self.calls.append(("umount2", target, flags))

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self.calls.append(("pivot_root", new_root, put_old))

    def sethostname(self, name: str) -> None:
        self.calls.append(("sethostname", name))

    def setdomainname(self, name: str) -> None:
        self.calls.append(("setdomainname", name))

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int:
        self.calls.append(("prctl", option, arg2, arg3, arg4, arg5))
        return 0

    def capget(self) -> CapSets:
        return self.caps

    def capset(self, sets: CapSets) -> None:
        self.calls.append(("capset", sets))
        self.caps = sets
