"""Paths of a synced tree: entries (what a path is), resolving without symlinks, scanning.

What it is for: both ends of a sync session describe their tree as :class:`Entry` values, find
what a path is now (:func:`lstat_entry`), read files and list trees, always by resolving a path
from the root one component at a time with O_NOFOLLOW|O_DIRECTORY (:func:`open_dir`) and using
directory handles: a symlink anywhere below the root is never followed, and a path below a link
or a file is absent. ``fstree`` (the applier) builds on it. The host's sync engine imports
this module too (one of the guest package's portable modules, see ``pydeskd.vmcontract``).
What it must never do: follow a symlink in any component, accept a path from the peer that is
not a plain relative one (:func:`check_rel`), or write anything.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Generator, Iterator
from typing import NamedTuple

TEMP_PREFIX = ".pydesk-tmp-"
"""Temporary files of an apply in progress: never scanned, never reported, never synced."""

FILE, DIR, LINK = "f", "d", "l"

# A directory handle for the *at() calls. O_PATH (Linux) needs no read permission and reads
# nothing; elsewhere O_RDONLY. O_NOFOLLOW|O_DIRECTORY: a symlink or a file fails (ENOTDIR).
O_PATH: int = getattr(os, "O_PATH", 0)
_DIR_HANDLE = O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
"""A parent that is missing, a file, or a symlink: the path is absent (never followed)."""


class UnsafePath(Exception):
    """A path from the peer that is absolute, climbs out of the root, or crosses a symlink."""


class Entry(NamedTuple):
    """One path of a tree (relative, '/'-separated). ``size`` and ``mode`` matter for files.
    A NamedTuple, not a dataclass: the guest side starts for every session, and importing
    dataclasses costs a second there under TCG; 10,000 tuples are also smaller."""

    path: str
    kind: str
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    target: str = ""

    def sig(self) -> tuple[object, ...]:
        """What must be equal for two entries to be "the same": dirs ignore mtime (children
        change it), links ignore mtime and mode (Linux cannot set them)."""
        if self.kind == FILE:
            return (FILE, self.size, self.mtime_ns, self.mode)
        if self.kind == DIR:
            return (DIR, self.mode)
        return (LINK, self.target)

    def wire(self) -> list[object]:
        return [self.path, self.kind, self.size, self.mtime_ns, self.mode, self.target]

    @classmethod
    def from_wire(cls, raw: list[object]) -> Entry:
        path, kind, size, mtime_ns, mode, target = raw
        if kind not in (FILE, DIR, LINK):
            raise ValueError(f"unknown entry kind {kind!r}")
        return cls(str(path), str(kind), int(size), int(mtime_ns),  # type: ignore[call-overload]
                   int(mode), str(target))  # type: ignore[call-overload]


def same(a: Entry | None, b: Entry | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.sig() == b.sig()


def entry_from_stat(rel: str, st: os.stat_result, target: str = "") -> Entry | None:
    if stat.S_ISREG(st.st_mode):
        return Entry(rel, FILE, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    if stat.S_ISDIR(st.st_mode):
        return Entry(rel, DIR, 0, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    if stat.S_ISLNK(st.st_mode):
        return Entry(rel, LINK, 0, st.st_mtime_ns, 0, target)
    return None  # sockets, fifos, devices: not synced


def check_rel(rel: str) -> str:
    """Validates a relative path from the peer; returns it."""
    if (not rel or rel.startswith("/") or "\0" in rel
            or any(part in ("", ".", "..") for part in rel.split("/"))):
        raise UnsafePath(f"bad path {rel!r}")
    return rel


# -- resolving paths without following any symlink ----------------------------------------------
def open_dir(root: str, rel_dir: str, *, create: bool = False) -> int:
    """A handle of directory ``rel_dir`` ('' = the root) reached one component at a time with
    O_NOFOLLOW|O_DIRECTORY: a symlink anywhere below the root is never followed (the root itself
    may be reached through links: the user chose it). ``create`` makes missing directories.
    Raises OSError (ENOENT, ENOTDIR: a component missing, a file, or a link; see ``ABSENT``)."""
    fd = os.open(root, _DIR_HANDLE & ~os.O_NOFOLLOW)
    try:
        for part in check_rel(rel_dir).split("/") if rel_dir else ():
            child = child_dir(fd, part, create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def child_dir(fd: int, part: str, create: bool) -> int:
    """A new handle of child directory ``part`` of the handle ``fd``."""
    try:
        return os.open(part, _DIR_HANDLE, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o755, dir_fd=fd)  # not 0o777: the guest side runs with umask 0
        return os.open(part, _DIR_HANDLE, dir_fd=fd)


def entry_at(dir_fd: int, name: str, rel: str) -> Entry | None:
    """The entry named ``name`` in the directory ``dir_fd`` (reported as ``rel``), or None."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        target = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else ""
    except OSError as e:
        if e.errno in ABSENT:
            return None
        raise
    return entry_from_stat(rel, st, target)


def lstat_entry(root: str, rel: str) -> Entry | None:
    """The entry at ``rel`` now, or None (absent, under a symlink or a file, or a kind that is
    not synced). Raises UnsafePath for a path that is not a plain relative one."""
    parent, _, name = check_rel(rel).rpartition("/")
    try:
        fd = open_dir(root, parent)
    except OSError as e:
        if e.errno in ABSENT:
            return None
        raise
    try:
        return entry_at(fd, name, rel)
    finally:
        os.close(fd)


def open_file(root: str, rel: str) -> int:
    """A read-only descriptor of the regular file or directory at ``rel``, never through a
    symlink (OSError, e.g. ELOOP or ENOTDIR, instead)."""
    parent, _, name = check_rel(rel).rpartition("/")
    fd = open_dir(root, parent)
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


Skip = Callable[[str, bool], bool]
"""``skip(rel, is_dir)``: True for a path that is not synced (ignore rules)."""


def scan(root: str, skip: Skip | None = None) -> dict[str, Entry]:
    """Every synced entry under ``root`` (not the root itself), without following links."""
    out: dict[str, Entry] = {}
    for entry in walk(root, "", skip):
        out[entry.path] = entry
    return out


def walk(root: str, start: str, skip: Skip | None) -> Iterator[Entry]:
    """The entries below directory ``start`` ('' = the root), parents before their children.
    Each directory is opened from its parent's handle with O_NOFOLLOW: a directory swapped for
    a symlink during the walk is skipped, not followed. Holds one descriptor per level."""
    try:
        handle = open_dir(root, start)
        try:
            top = os.open(".", _DIR_LIST, dir_fd=handle)
        finally:
            os.close(handle)
    except OSError:  # gone, not a directory, a link, unreadable
        return
    stack: list[tuple[int, list[str]]] = [(top, [])]
    try:
        stack[-1][1].extend((yield from _list(top, start, skip)))
        while stack:
            fd, dirs = stack[-1]
            if not dirs:
                stack.pop()
                os.close(fd)
                continue
            rel = dirs.pop()
            try:
                child = os.open(rel.rpartition("/")[2], _DIR_LIST, dir_fd=fd)
            except OSError:
                continue
            stack.append((child, []))
            stack[-1][1].extend((yield from _list(child, rel, skip)))
    finally:
        for fd, _ in stack:
            os.close(fd)


def _list(fd: int, rel_dir: str, skip: Skip | None) -> Generator[Entry, None, list[str]]:
    """Yields the entries of one open directory; returns its subdirectories' paths."""
    subdirs: list[str] = []
    with os.scandir(fd) as it:
        for de in it:
            if de.name.startswith(TEMP_PREFIX):
                continue
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            try:
                st = de.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                if skip is not None and skip(rel, is_dir):
                    continue
                target = os.readlink(de.name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
            except FileNotFoundError:
                continue
            entry = entry_from_stat(rel, st, target)
            if entry is None:
                continue
            yield entry
            if is_dir:
                subdirs.append(rel)
    return subdirs


def read_chunks(root: str, entry: Entry, chunk: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) pieces of a file's content, at least one (empty files too)."""
    fd = open_file(root, entry.path)
    try:
        offset = 0
        while True:
            data = os.read(fd, chunk)
            yield offset, data
            offset += len(data)
            if len(data) < chunk:
                return
    finally:
        os.close(fd)
