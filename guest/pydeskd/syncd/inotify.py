"""Recursive inotify over a tree (ctypes on libc): which paths changed, nothing more.

What it is for: the guest side of a sync session learns that a container wrote, created,
deleted, renamed or chmod-ed something under its root, as relative paths; the server then looks
at each path (lstat) and reports what it is now. New directories get a watch, and their contents
at that moment are reported too (files created before the watch existed would be missed else).
Renames it saw (the two halves of a move share a cookie) are kept for :meth:`Inotify.take_moves`:
real evidence of a rename, which equal size and mtime are not.
What it must never do: follow symlinks (a directory is watched through a handle opened one
component at a time with O_NOFOLLOW, so a link anywhere in its path is not followed), or decide
anything about the changes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable

from pydeskd.syncd import fstree

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
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
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
        self._moved_from: dict[int, str] = {}  # cookie -> old path, until its IN_MOVED_TO
        self.moves: dict[str, str] = {}
        """new path -> old path of the renames seen since :meth:`take_moves`."""

    def take_moves(self) -> dict[str, str]:
        """The renames seen so far (new path -> old path), forgotten here."""
        moves, self.moves = self.moves, {}
        return moves

    def watch_tree(self, rel: str = "") -> list[str]:
        """Watches ``rel`` and every directory below it; returns the paths found below it.
        Each directory is watched before it is listed (``walk`` yields a directory before it
        goes in): a file created meanwhile is in the listing or in an event."""
        if not self._watch(rel):
            return []
        found: list[str] = []
        for entry in fstree.walk(self.root, rel, self.skip):
            found.append(entry.path)
            if entry.kind == fstree.DIR:
                self._watch(entry.path)
        return found

    def _watch(self, rel: str) -> bool:
        try:
            handle = fstree.open_dir(self.root, rel)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES):
                return False
            raise
        try:
            # The directory the handle holds, whatever its path is by now: /proc's link to it
            # is followed on purpose (IN_DONT_FOLLOW would refuse it), nothing else is.
            path = f"/proc/self/fd/{handle}"
            mask = WATCH_MASK & ~IN_DONT_FOLLOW | IN_ONLYDIR
            if not os.path.exists(path):  # no /proc: the path, its last component unfollowed
                path, mask = os.path.join(self.root, rel) if rel else self.root, WATCH_MASK
            wd = self._add(self.fd, os.fsencode(path), mask)
        finally:
            os.close(handle)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return False
            raise OSError(err, f"inotify_add_watch {rel!r}: {os.strerror(err)}")
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
                wd, mask, cookie, length = EVENT.unpack_from(buf, offset)
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
                self._note_move(mask, cookie, rel)
                if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                    changed.extend(self.watch_tree(rel))

    def _note_move(self, mask: int, cookie: int, rel: str) -> None:
        if mask & IN_ISDIR or not cookie:
            return  # a directory's move is not paired (its files are sent one by one)
        if mask & IN_MOVED_FROM:
            if len(self._moved_from) > 10_000:  # moves out of the tree never get their half
                self._moved_from.clear()
            self._moved_from[cookie] = rel
        elif mask & IN_MOVED_TO and (old := self._moved_from.pop(cookie, None)) is not None:
            self.moves[rel] = old
            if len(self.moves) > 100_000:  # nobody takes them
                self.moves.clear()

    def close(self) -> None:
        os.close(self.fd)
