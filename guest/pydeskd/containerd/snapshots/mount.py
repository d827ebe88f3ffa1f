"""Performing the ``Mount`` lists a snapshotter returns, behind one seam.

What it is for: ``perform(mounts, target)`` mounts them in order at ``target`` (containerd's
``mount.All``), ``unmount(target)`` undoes every mount stacked there, ``mounted(...)`` does both
around a block. The option strings are containerd's (``ro``, ``rbind``, ``nosuid``, ...; the rest
is filesystem data such as ``lowerdir=``). A read-only bind is a bind plus a read-only remount,
because the kernel ignores ``MS_RDONLY`` on the bind itself.

An overlay whose data does not fit in one page (many layers, long paths) is mounted through the
new mount API instead, one ``lowerdir+`` at a time (Linux 6.8+), where no page limit applies;
where that API is missing, a clear ``InvalidArgument`` says so. (containerd shortens the paths and
mounts from a chdir'ed helper process instead; in a threaded daemon a chdir is process-wide.)

The seam: ``Mounter`` is the interface, ``LinuxMounter`` makes the syscalls (tested as root),
``RecordingMounter`` records them so the option handling is unit-tested without root.

What it must never do: mount at a target it was not given, or leave a half-performed list
mounted when one of them fails (what was mounted is undone before the error propagates).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.snapshots import Mount
from pydeskd.runtime.syscalls import (  # the kernel's mount flags, defined once
    MNT_DETACH,
    MS_BIND,
    MS_DIRSYNC,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
)

# option -> (clear?, flag), as containerd's mount_linux.go parseMountOptions
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS), "atime": (True, MS_NOATIME), "bind": (False, MS_BIND),
    "defaults": (False, 0), "dev": (True, MS_NODEV), "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC), "exec": (True, MS_NOEXEC), "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME), "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME), "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK), "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME), "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC), "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT), "ro": (False, MS_RDONLY), "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME), "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION = {"private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "shared": MS_SHARED,
                "rshared": MS_SHARED | MS_REC, "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC}
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Parsed:
    flags: int
    propagation: int
    data: tuple[str, ...]


def parse_options(options: Sequence[str]) -> Parsed:
    flags = propagation = 0
    data: list[str] = []
    for option in options:
        if option in _FLAGS:
            clear, flag = _FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        else:
            data.append(option)
    return Parsed(flags, propagation, tuple(data))


class Mounter(Protocol):
    """The mount syscalls ``perform`` and ``unmount`` need."""

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None: ...

    def mount_fs(self, fstype: str, source: str, target: str, params: Sequence[tuple[str, str]],
                 flags: int) -> None:
        """New mount API: fsopen, fsconfig each (key, value), create, fsmount, move_mount."""
        ...

    def umount(self, target: str, flags: int) -> None: ...


# --- the real one ---------------------------------------------------------------------------

_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTRS = {MS_RDONLY: 0x1, MS_NOSUID: 0x2, MS_NODEV: 0x4, MS_NOEXEC: 0x8,
                MS_NOATIME: 0x10, MS_STRICTATIME: 0x20, MS_NODIRATIME: 0x80}


class LinuxMounter:
    """The real syscalls, through libc; failures raise OSError with the call in the message."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def _check(self, result: int, call: str, log_fd: int = -1) -> int:
        if result < 0:
            err = ctypes.get_errno()
            detail = ""
            if log_fd >= 0:  # the kernel's own explanation, queued on the fs context
                with contextlib.suppress(OSError):
                    detail = " (" + os.read(log_fd, 4096).decode(errors="replace").strip() + ")"
            raise OSError(err, f"{call}: {os.strerror(err)}{detail}")
        return result

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        result = self._libc.mount(source.encode() or None, target.encode(),
                                  fstype.encode() or None, ctypes.c_ulong(flags),
                                  data.encode() or None)
        self._check(result, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")

    def mount_fs(self, fstype: str, source: str, target: str, params: Sequence[tuple[str, str]],
                 flags: int) -> None:
        call = self._libc.syscall
        fs_fd = self._check(call(ctypes.c_long(_SYS_FSOPEN), fstype.encode(), ctypes.c_uint(1)),
                            f"fsopen({fstype!r})")
        try:
            all_params = [("source", source), *params]
            for key, value in all_params:
                if value:
                    r = call(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs_fd),
                             ctypes.c_uint(_FSCONFIG_SET_STRING), key.encode(), value.encode(),
                             ctypes.c_int(0))
                else:
                    r = call(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs_fd),
                             ctypes.c_uint(_FSCONFIG_SET_FLAG), key.encode(), None,
                             ctypes.c_int(0))
                self._check(r, f"fsconfig({key!r}, {value!r})", fs_fd)
            self._check(call(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs_fd),
                             ctypes.c_uint(_FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0)),
                        "fsconfig(create)", fs_fd)
            attrs = sum(a for f, a in _MOUNT_ATTRS.items() if flags & f)
            mnt_fd = self._check(call(ctypes.c_long(_SYS_FSMOUNT), ctypes.c_int(fs_fd),
                                      ctypes.c_uint(1), ctypes.c_uint(attrs)), "fsmount", fs_fd)
        finally:
            os.close(fs_fd)
        try:
            self._check(call(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(mnt_fd), b"",
                             ctypes.c_int(-100), target.encode(),
                             ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH)),
                        f"move_mount({target!r})")
        finally:
            os.close(mnt_fd)

    def umount(self, target: str, flags: int) -> None:
        self._check(self._libc.umount2(target.encode(), ctypes.c_int(flags)),
                    f"umount2({target!r}, {flags})")


class RecordingMounter:
    """Records every call instead of making it (unit tests). ``mounted`` mimics the stack."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.mounted: list[str] = []

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.calls.append(("mount", source, target, fstype, flags, data))
        if not flags & (MS_REMOUNT | MS_PRIVATE | MS_SHARED | MS_SLAVE):
            self.mounted.append(target)

    def mount_fs(self, fstype: str, source: str, target: str, params: Sequence[tuple[str, str]],
                 flags: int) -> None:
        self.calls.append(("mount_fs", fstype, source, target, tuple(params), flags))
        self.mounted.append(target)

    def umount(self, target: str, flags: int) -> None:
        self.calls.append(("umount", target, flags))
        if target not in self.mounted:
            raise OSError(errno.EINVAL, f"umount2({target!r}): not mounted")
        self.mounted.reverse()
        self.mounted.remove(target)
        self.mounted.reverse()


# --- perform and undo -----------------------------------------------------------------------


def _mount_one(mounter: Mounter, mount: Mount, target: str) -> None:
    parsed = parse_options(mount.options)
    if mount.type == "bind" and not parsed.flags & MS_BIND:
        parsed = Parsed(parsed.flags | MS_BIND, parsed.propagation, parsed.data)
    data = ",".join(parsed.data)
    if mount.type == "overlay" and len(data) + 1 > _PAGE_SIZE:
        params: list[tuple[str, str]] = []
        for option in parsed.data:
            key, _, value = option.partition("=")
            if key == "lowerdir":
                params.extend(("lowerdir+", lower) for lower in value.split(":"))
            else:
                params.append((key, value))
        try:
            mounter.mount_fs("overlay", mount.source, target, params, parsed.flags)
        except OSError as err:
            raise InvalidArgument(
                f"overlay mount data is {len(data)} bytes, over the {_PAGE_SIZE}-byte page limit,"
                f" and the kernel refused it through the new mount API too ({err}); fewer"
                " layers or a shorter snapshotter root are needed") from err
        return
    fstype = "" if parsed.flags & MS_BIND else mount.type
    mounter.mount(mount.source, target, fstype, parsed.flags & ~MS_RDONLY
                  if parsed.flags & MS_BIND else parsed.flags, data)
    try:
        if parsed.flags & MS_BIND and parsed.flags & MS_RDONLY:
            # The kernel ignores MS_RDONLY on a new bind: it takes a remount to make it
            # read-only.
            mounter.mount("", target, "", MS_REMOUNT | MS_BIND | (parsed.flags & ~MS_REC), "")
        if parsed.propagation:
            mounter.mount("", target, "", parsed.propagation, "")
    except BaseException:
        # The mount is there but not as asked (a committed layer bound read-write, say): undo
        # it here, as ``perform`` rolls back only the mounts that completed.
        with contextlib.suppress(OSError):
            mounter.umount(target, MNT_DETACH)
        raise


def perform(mounts: Sequence[Mount], target: str | os.PathLike[str],
            mounter: Mounter | None = None) -> None:
    """Mount ``mounts`` in order at ``target`` (or at ``target/<mount.target>``).

    On failure, what was mounted is unmounted again and the error raised (OSError, or
    InvalidArgument for an overlay the kernel cannot take).
    """
    mounter = mounter or LinuxMounter()
    done: list[str] = []
    try:
        for mount in mounts:
            where = os.fspath(target)
            if mount.target:
                where = os.path.join(where, mount.target.lstrip("/"))
            _mount_one(mounter, mount, where)
            done.append(where)
    except BaseException:
        for where in reversed(done):
            with contextlib.suppress(OSError):
                mounter.umount(where, MNT_DETACH)
        raise


def unmount(target: str | os.PathLike[str], mounter: Mounter | None = None,
            detach: bool = False) -> None:
    """Unmount everything stacked at ``target`` (until it is no mount point any more)."""
    mounter = mounter or LinuxMounter()
    for _ in range(256):
        try:
            mounter.umount(os.fspath(target), MNT_DETACH if detach else 0)
        except OSError as err:
            if err.errno in (errno.EINVAL, errno.ENOENT):
                return
            raise
    raise OSError(errno.EBUSY, f"{os.fspath(target)}: still mounted after 256 unmounts")


@contextlib.contextmanager
def mounted(mounts: Sequence[Mount], target: str | os.PathLike[str] | None = None,
            mounter: Mounter | None = None) -> Iterator[Path]:
    """``mounts`` performed at ``target`` (a new temporary directory if None) for a block."""
    mounter = mounter or LinuxMounter()
    made = target is None
    where = Path(tempfile.mkdtemp(prefix="pydesk-mount-")) if target is None else Path(target)
    try:
        perform(mounts, where, mounter)
        try:
            yield where
        finally:
            unmount(where, mounter)
    finally:
        if made:
            with contextlib.suppress(OSError):
                where.rmdir()
