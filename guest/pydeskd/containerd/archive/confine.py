"""Path confinement for layer extraction: every lookup is resolved inside one root directory.

What it is for: a layer tar is hostile input. Its entry names, link targets and the symlinks it
created earlier must never take a write (or a hardlink's read) outside the snapshot directory.
The kernel does the resolving: ``openat2(2)`` with ``RESOLVE_IN_ROOT`` treats the root fd as
``/`` (an absolute symlink restarts there, ``..`` stops there) and is immune to the races of
path-string checks. Every change is then made relative to the resolved *parent* fd, on the last
component only, never following it (``O_NOFOLLOW``, ``AT_SYMLINK_NOFOLLOW``, ``fchown`` on an
opened fd): the CVE-2021-32760 class (chmod following a symlink planted by the layer) cannot
happen because no call here takes a path with more than one component.

The rules, per case (``clean_name``):

- an absolute name (``/etc/passwd``) is relative to the root (GNU tar and containerd do this);
- ``.`` and empty components are dropped; a name that is only the root itself is skipped;
- a ``..`` component anywhere is **rejected** (``InvalidArgument``), as moby does; no legitimate
  layer has one, and rejecting is clearer than clamping;
- a component longer than 255 bytes or a name longer than 4095 is rejected;
- a parent that is a symlink (absolute or relative, even ``../../..``) is *followed inside the
  root* (``RESOLVE_IN_ROOT``), as containerd's ``fs.RootPath`` does: it can only land in the root;
- a parent that is a dangling symlink is rejected (creating its target would mean following it);
- a hardlink target follows the same rules and is linked without following a final symlink
  (the link points at the symlink itself, which stays inert data).

What it must never do: pass a multi-component path to a mutating syscall, or open anything with a
resolution that can leave the root.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable, Iterator

from pydeskd.containerd.errors import InvalidArgument, Unavailable

_SYS_OPENAT2 = 437  # the same number on every architecture (new syscall table)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
_NAME_MAX = 255
# Makes a missing directory ``name`` in ``parent_fd``; ``parts`` is its path inside the root.
_Creator = Callable[[tuple[str, ...], int, str], None]
_PATH_MAX = 4095


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """``openat2(2)``; raises OSError with the errno (retries EAGAIN from concurrent renames)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    raw = os.fsencode(path)
    for _ in range(64):
        fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), raw,
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise Unavailable("openat2(2) is not available: pydesk needs Linux 5.6 or later")
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def clean_name(name: str) -> tuple[str, ...]:
    """The components of a tar entry name, by the rules in the module docstring.

    Returns ``()`` for the root itself. Raises InvalidArgument for ``..`` or over-long names.
    """
    if "\0" in name:
        raise InvalidArgument(f"tar entry name {name!r} contains a NUL byte")
    if len(os.fsencode(name)) > _PATH_MAX:
        raise InvalidArgument(f"tar entry name is longer than {_PATH_MAX} bytes")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    for part in parts:
        if part == "..":
            raise InvalidArgument(f"tar entry {name!r}: '..' is not allowed in a layer path")
        if len(os.fsencode(part)) > _NAME_MAX:
            raise InvalidArgument(f"tar entry {name!r}: a component is longer than {_NAME_MAX}")
    return parts


def _display(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


class Root:
    """A directory opened once; every path below it is resolved by the kernel inside it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, parts: tuple[str, ...], flags: int, resolve: int = 0) -> int:
        """Open ``parts`` resolved inside the root (``RESOLVE_IN_ROOT`` plus ``resolve``)."""
        path = "/".join(parts) or "."
        try:
            return openat2(self.fd, path, flags,
                           RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | resolve)
        except OSError as err:
            if err.errno == errno.ELOOP and not resolve & RESOLVE_NO_SYMLINKS:
                raise InvalidArgument(f"{_display(parts)}: too many levels of symlinks") from None
            raise

    def open_dir(self, parts: tuple[str, ...]) -> int | None:
        """A readable fd of directory ``parts`` inside the root, or None if it is missing."""
        try:
            return self.open(parts, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None

    def make_parents(self, parts: tuple[str, ...],
                     on_create: _Creator | None = None) -> int:
        """An fd of directory ``parts`` inside the root, creating missing components.

        ``on_create(parts_so_far, parent_fd, name)`` makes a missing directory (the overlay
        applier copies its metadata from a lower layer); the default is mode 0755.
        Raises InvalidArgument if a component exists and is not a directory (or a symlink to one
        inside the root), or is a dangling symlink.
        """
        fd = os.dup(self.fd)
        try:
            for i, name in enumerate(parts):
                prefix = parts[: i + 1]
                try:
                    child = self.open(prefix, os.O_RDONLY | os.O_DIRECTORY)
                except FileNotFoundError:
                    try:
                        if on_create is None:
                            os.mkdir(name, 0o755, dir_fd=fd)
                        else:
                            on_create(prefix, fd, name)
                    except FileExistsError:
                        raise InvalidArgument(
                            f"{_display(prefix)} is a dangling symlink: cannot create below it"
                        ) from None
                    child = self.open(prefix, os.O_RDONLY | os.O_DIRECTORY)
                except NotADirectoryError:
                    raise InvalidArgument(
                        f"{_display(prefix)} is not a directory: cannot create below it"
                    ) from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    @contextlib.contextmanager
    def parent(self, parts: tuple[str, ...], create: bool = True,
               on_create: _Creator | None = None) -> Iterator[int | None]:
        """The fd of the directory that holds ``parts`` (None if missing and not ``create``)."""
        if create:
            fd: int | None = self.make_parents(parts[:-1], on_create)
        else:
            fd = self.open_dir(parts[:-1])
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``fstatat(AT_SYMLINK_NOFOLLOW)`` of one name, or None if it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
