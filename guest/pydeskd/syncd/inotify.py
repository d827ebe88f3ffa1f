"""Recursive inotify over a tree (ctypes on libc): which paths changed, nothing more.

What it is for: the guest side of a sync session learns that a container wrote, created,
deleted, renamed or chmod-ed something under its root, as relative paths; the server then looks
at each path (lstat) and reports what it is now. New directories get a watch, and their contents
at that moment are reported too (files created before the watch existed would be missed else).
What it must never do: follow symlinks (IN_DONT_FOLLOW), or decide anything about the changes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_DONT_FOLLOW = 0x1000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCH_MASK = (IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_DONT_FOLLOW)
EVENT = struct.Struct("iIII")


def _libc() -> ctypes.CDLL:
    # Not ctypes.util.find_library first: it runs ldconfig/gcc in a subprocess (a second and
    # more under TCG, at every session start).
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes import util

        return ctypes.CDLL(util.find_library("c"), use_errno=True)


class Inotify:
    """A recursive watch of ``root``. ``read()`` returns the changed relative paths ("" never:
    the root itself is not a synced entry); ``overflowed`` says the kernel dropped events (the
    caller must rescan)."""

    def __init__(self, root: str, skip: Callable[[str, bool], bool]) -> None:
        libc = _libc()
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add.restype = ctypes.c_int
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        self.root = root
        self.skip = skip
        """``skip(rel, is_dir)``: an ignored path (not watched, not reported)."""
        self._dirs: dict[int, str] = {}  # watch descriptor -> relative dir ("" = root)
        self.overflowed = False

    def watch_tree(self, rel: str = "") -> list[str]:
        """Watches ``rel`` and every directory below it; returns the paths found below it."""
        found: list[str] = []
        stack = [rel]
        while stack:
            cur = stack.pop()
            if not self._watch(cur):
                continue
            try:
                it = os.scandir(os.path.join(self.root, cur) if cur else self.root)
            except OSError:
                continue
            with it:
                for de in it:
                    child = f"{cur}/{de.name}" if cur else de.name
                    try:
                        is_dir = de.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if self.skip(child, is_dir):
                        continue
                    found.append(child)
                    if is_dir:
                        stack.append(child)
        return found

    def _watch(self, rel: str) -> bool:
        path = os.path.join(self.root, rel) if rel else self.root
        wd = self._add(self.fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return False
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._dirs[wd] = rel
        return True

    def read(self) -> list[str]:
        """Drains pending events; returns changed paths in order (duplicates possible)."""
        changed: list[str] = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return changed
            if not buf:
                return changed
            offset = 0
            while offset < len(buf):
                wd, mask, _cookie, length = EVENT.unpack_from(buf, offset)
                raw = buf[offset + EVENT.size: offset + EVENT.size + length]
                offset += EVENT.size + length
                name = os.fsdecode(raw.split(b"\0", 1)[0])
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                    continue
                if mask & IN_IGNORED:
                    self._dirs.pop(wd, None)
                    continue
                base = self._dirs.get(wd)
                if base is None or not name:
                    continue
                rel = f"{base}/{name}" if base else name
                if self.skip(rel, bool(mask & IN_ISDIR)):
                    continue
                changed.append(rel)
                if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                    changed.extend(self.watch_tree(rel))

    def close(self) -> None:
        os.close(self.fd)
