"""Applying the peer's changes to a synced tree atomically, as a compare-and-swap per path.

What it is for: :class:`Applier` writes through a temporary file in the same directory and
renames it into place (mode and mtime set first), and applies each change only if the path still
is what the sender believed (``expect``): a compare-and-swap that turns a race with a local writer
into a reported conflict instead of a silent overwrite. It re-exports ``fspath`` (entries,
lookups, scans), so callers import this module only. The host's sync engine imports both
modules too (portable guest modules, see ``pydeskd.vmcontract``).
What it must never do: follow a symlink anywhere in a path (paths are resolved by
``fspath.open_dir`` and used through directory handles: writing below a link or a file is
refused with UnsafePath), write outside the root, replace a name it meant to create, or touch
owner/group. The peer is not trusted: every path it names goes through ``check_rel``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import NamedTuple

from .fspath import (
    ABSENT,
    DIR,
    FILE,
    LINK,
    O_PATH,
    TEMP_PREFIX,
    Entry,
    Skip,
    UnsafePath,
    check_rel,
    child_dir,
    entry_at,
    entry_from_stat,
    lstat_entry,
    open_dir,
    open_file,
    read_chunks,
    same,
    scan,
    walk,
)

__all__ = ["DIR", "FILE", "LINK", "TEMP_PREFIX", "Applier", "Entry", "Rejected", "Skip",
           "UnsafePath", "check_rel", "entry_at", "entry_from_stat", "lstat_entry", "open_dir",
           "open_file", "read_chunks", "same", "scan", "walk"]


class Rejected(NamedTuple):
    """A change not applied because the path is no longer what the sender expected.

    ``current`` is what is there now; ``temp`` (relative to the root, beside the path) holds
    the received content (files) when the caller wants to keep it (the host resolves conflicts
    with it), else it was removed."""

    path: str
    current: Entry | None
    temp: str | None = None


class Applier:
    """Applies the peer's changes under ``root``; each ``expect`` is compared with the path's
    current entry first. ``inplace`` rewrites an existing file's inode instead of renaming over
    it (a single-file bind mount in a container keeps pointing at the old inode otherwise).
    Every path is resolved from the root one component at a time (``open_dir``): a parent that
    is a symlink or a file is "absent" for a compare and refused (UnsafePath) for a write."""

    MAX_HANDLES = 64

    def __init__(self, root: str, *, inplace: bool = False, keep_rejected: bool = False,
                 umask_zero: bool = False) -> None:
        self.root = root
        self.umask_zero = umask_zero
        """The process runs with umask 0 (the guest side does): a file gets its mode from
        open() and needs no fchmod (one syscall and one inotify event less per file)."""
        self.inplace = inplace
        self.keep_rejected = keep_rejected
        # path -> (fd, parent handle, temp name) of files in transfer
        self._open: dict[str, tuple[int, int, str]] = {}
        self._dirs: dict[str, int] = {}  # directory handles resolved during the current message

    def new_message(self) -> None:
        """Forgets the directories resolved so far: called per incoming message, so one batch
        of thousands of files resolves each directory once, and the next batch resolves again
        (a directory replaced meanwhile is not written through an old handle)."""
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _dir(self, rel_dir: str, create: bool) -> int:
        """A cached handle of ``rel_dir``; OSError as ``open_dir``. A loop, not recursion: a
        peer's path thousands of levels deep is an OSError (EMFILE at worst), not a crash."""
        fd = self._dirs.get(rel_dir)
        if fd is not None:
            return fd
        if "" not in self._dirs:
            self._dirs[""] = open_dir(self.root, "")
        if not rel_dir:
            return self._dirs[""]
        parts = rel_dir.split("/")
        known = len(parts) - 1  # the longest prefix already open
        while known and "/".join(parts[:known]) not in self._dirs:
            known -= 1
        fd = self._dirs["/".join(parts[:known])]
        for depth in range(known, len(parts)):
            fd = child_dir(fd, parts[depth], create)
            self._dirs["/".join(parts[:depth + 1])] = fd
        return fd

    def _trim(self) -> None:
        """Bounds the cached handles; called where an operation starts (never during one: its
        handles would be closed under it)."""
        if len(self._dirs) > self.MAX_HANDLES:
            self.new_message()

    def _lookup(self, rel: str) -> tuple[int, str] | None:
        """(parent handle, name) of ``rel``, or None when a parent is missing or not a
        directory (a symlink included): the path is then absent."""
        parent, _, name = check_rel(rel).rpartition("/")
        try:
            return self._dir(parent, False), name
        except OSError as e:
            if e.errno in ABSENT:
                return None
            raise

    def _parent(self, rel: str) -> tuple[int, str]:
        """(parent handle, name) of ``rel``, making missing parents; a parent that is a
        symlink or a file raises UnsafePath."""
        parent, _, name = check_rel(rel).rpartition("/")
        try:
            return self._dir(parent, True), name
        except OSError as e:
            if e.errno in ABSENT:
                raise UnsafePath(f"a parent of {rel!r} is not a directory") from e
            raise

    def current(self, rel: str) -> Entry | None:
        """The entry at ``rel`` now (as :func:`lstat_entry`)."""
        self._trim()
        return self._current(rel)

    def _current(self, rel: str) -> Entry | None:
        found = self._lookup(rel)
        return None if found is None else entry_at(found[0], found[1], rel)

    def file_chunk(self, entry: Entry, expect: Entry | None, offset: int, data: bytes,
                   final: bool, *, direct: bool = False) -> Rejected | None:
        """One piece of a file's content; the file appears (atomically) with the final piece.
        ``direct``: a whole new file (first sync, nobody reads yet) is written in place."""
        rel = check_rel(entry.path)
        self._trim()
        if direct and offset == 0 and final and expect is None and not self.keep_rejected:
            return self._new_file(rel, entry, data)
        if offset == 0:
            self.abort(rel)
            dir_fd, name = self._parent(rel)
            temp = f"{TEMP_PREFIX}{os.urandom(4).hex()}-{name}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, entry.mode if self.umask_zero else 0o600, dir_fd=dir_fd)
            self._open[rel] = (fd, os.dup(dir_fd), temp)
        if rel not in self._open:
            raise UnsafePath(f"content for {rel!r} at offset {offset} without its start")
        fd, dir_fd, temp = self._open[rel]
        if data:
            _write_all(fd, data)
        if not final:
            return None
        del self._open[rel]
        try:
            try:
                if not self.umask_zero:
                    os.fchmod(fd, entry.mode)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
            return self._finish(rel, dir_fd, temp, expect)
        finally:
            os.close(dir_fd)

    def _finish(self, rel: str, dir_fd: int, temp: str, expect: Entry | None) -> Rejected | None:
        name = rel.rpartition("/")[2]
        current = entry_at(dir_fd, name, rel)
        if same(current, expect):
            try:
                self._install_at(dir_fd, temp, dir_fd, name, current)
                return None
            except OSError:  # a directory in the way that is not empty; a new name taken
                current = entry_at(dir_fd, name, rel)
        if self.keep_rejected:
            parent = rel.rpartition("/")[0]
            return Rejected(rel, current, f"{parent}/{temp}" if parent else temp)
        _unlink_quiet(dir_fd, temp)
        return Rejected(rel, current)

    def _new_file(self, rel: str, entry: Entry, data: bytes) -> Rejected | None:
        """A whole file where nothing is expected: O_EXCL is the compare-and-swap, and no
        temporary file or rename is needed (a third of the syscalls of a first sync). A reader
        may see it partly written for the time of one write."""
        dir_fd, name = self._parent(rel)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         entry.mode if self.umask_zero else 0o600, dir_fd=dir_fd)
        except FileExistsError:
            return Rejected(rel, entry_at(dir_fd, name, rel))
        try:
            if data:
                _write_all(fd, data)
            if not self.umask_zero:
                os.fchmod(fd, entry.mode)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        return None

    def install(self, temp: str, rel: str, current: Entry | None) -> None:
        """Moves a finished temporary file (``temp``: relative to the root) to ``rel``: over
        what is there (``current``) but a non-empty directory, or, when ``current`` is None,
        only if nothing is there (FileExistsError else). OSError when it cannot."""
        self._trim()
        src = self._lookup(check_rel(temp))
        dst = self._parent(rel)
        if src is None:
            raise FileNotFoundError(errno.ENOENT, "the received content is gone", temp)
        self._install_at(src[0], src[1], dst[0], dst[1], current)

    def _install_at(self, src_fd: int, src: str, dst_fd: int, name: str,
                    current: Entry | None) -> None:
        if current is None:
            _move_noreplace(src_fd, src, dst_fd, name)
            return
        if current.kind == DIR:
            os.rmdir(name, dir_fd=dst_fd)
        if self.inplace and current.kind == FILE:
            _copy_into(src_fd, src, dst_fd, name)
            return
        os.rename(src, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)

    def discard(self, temp: str) -> None:
        """Removes a received temporary file (relative to the root) that was not installed."""
        self._trim()
        found = self._lookup(check_rel(temp))
        if found is not None:
            _unlink_quiet(*found)

    def abort(self, rel: str) -> None:
        """Drops a half-received file (the sender gave up, or restarted it)."""
        fd_temp = self._open.pop(rel, None)
        if fd_temp is not None:
            fd, dir_fd, temp = fd_temp
            os.close(fd)
            _unlink_quiet(dir_fd, temp)
            os.close(dir_fd)

    def abort_all(self) -> None:
        for rel in list(self._open):
            self.abort(rel)
        self.new_message()

    def mkdir(self, entry: Entry, expect: Entry | None) -> Rejected | None:
        rel = check_rel(entry.path)
        self._trim()
        current = self._current(rel)
        if current is not None and current.kind == DIR:
            # A directory is "the same" whatever its children: only its mode can differ.
            if current.mode != entry.mode:
                dir_fd, name = self._parent(rel)
                _chmod_at(dir_fd, name, entry.mode)
            return None
        if not same(current, expect):
            return Rejected(rel, current)
        dir_fd, name = self._parent(rel)
        if current is not None:
            os.unlink(name, dir_fd=dir_fd)
        os.mkdir(name, 0o700, dir_fd=dir_fd)  # its own mode next
        _chmod_at(dir_fd, name, entry.mode)
        return None

    def symlink(self, entry: Entry, expect: Entry | None) -> Rejected | None:
        rel = check_rel(entry.path)
        self._trim()
        current = self._current(rel)
        if same(current, entry):
            return None
        if not same(current, expect):
            return Rejected(rel, current)
        dir_fd, name = self._parent(rel)
        temp = f"{TEMP_PREFIX}{os.urandom(4).hex()}"
        os.symlink(entry.target, temp, dir_fd=dir_fd)
        try:
            self._install_at(dir_fd, temp, dir_fd, name, current)
        except OSError:
            _unlink_quiet(dir_fd, temp)
            return Rejected(rel, entry_at(dir_fd, name, rel))
        finally:
            self.new_message()  # a directory replaced: no handle of it or below may be reused
        return None

    def remove(self, rel: str, expect: Entry | None) -> Rejected | None:
        """Deletes ``rel`` if it is still ``expect``; a directory only when empty (a child the
        sender did not know about must survive)."""
        rel = check_rel(rel)
        self._trim()
        found = self._lookup(rel)
        current = None if found is None else entry_at(found[0], found[1], rel)
        if found is None or current is None:
            return None
        if not same(current, expect):
            return Rejected(rel, current)
        try:
            if current.kind == DIR:
                os.rmdir(found[1], dir_fd=found[0])
            else:
                os.unlink(found[1], dir_fd=found[0])
        except FileNotFoundError:
            pass
        except OSError:  # ENOTEMPTY: children the sender did not delete stay, with their dir
            return Rejected(rel, entry_at(found[0], found[1], rel))
        finally:
            self.new_message()
        return None

    def rename(self, rel: str, to: str, expect: Entry | None) -> Rejected | None:
        """Renames ``rel`` to ``to`` if ``rel`` is still ``expect`` and ``to`` is free (a
        ``to`` that appears meanwhile is never replaced)."""
        rel, to = check_rel(rel), check_rel(to)
        self._trim()
        found = self._lookup(rel)
        current = None if found is None else entry_at(found[0], found[1], rel)
        if found is None or current is None or not same(current, expect):
            return Rejected(rel, current)
        try:
            if self._current(to) is not None:
                return Rejected(rel, current)
            dst_fd, name = self._parent(to)
            _move_noreplace(found[0], found[1], dst_fd, name)
        except FileExistsError:
            return Rejected(rel, current)
        finally:
            self.new_message()
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _move_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Renames without ever replacing ``dst`` (FileExistsError): link() then unlink() for
    files and links (link fails on an existing name); a directory, or a filesystem without
    hard links, is checked first then renamed (a window of microseconds)."""
    st = os.stat(src, dir_fd=src_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # EPERM, EXDEV, EMLINK...: no hard link here
        else:
            os.unlink(src, dir_fd=src_fd)
            return
    if entry_at(dst_fd, dst, dst) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def _chmod_at(dir_fd: int, name: str, mode: int) -> None:
    """chmod without following a symlink: through an O_PATH handle's /proc link on Linux
    (fchmodat cannot refuse links there), fchmodat(AT_SYMLINK_NOFOLLOW) elsewhere."""
    if os.chmod in os.supports_follow_symlinks or not O_PATH:
        os.chmod(name, mode, dir_fd=dir_fd, follow_symlinks=False)
        return
    fd = os.open(name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "a symlink: its mode is not changed", name)
        try:
            os.chmod(f"/proc/self/fd/{fd}", mode)
        except FileNotFoundError:  # no /proc mounted: a readable handle (not a link) instead
            readable = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                os.fchmod(readable, mode)
            finally:
                os.close(readable)
    finally:
        os.close(fd)


def _copy_into(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rewrites the existing file ``dst`` with the temporary file ``src``'s content, mode and
    times (same inode), and removes ``src`` (first: its name is gone before ``dst`` changes)."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
    try:
        os.unlink(src, dir_fd=src_fd)
        fout = os.open(dst, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst_fd)
        try:
            st = os.fstat(fin)
            os.ftruncate(fout, 0)
            while block := os.read(fin, 1 << 20):
                _write_all(fout, block)
            os.fchmod(fout, stat.S_IMODE(st.st_mode))
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _unlink_quiet(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
