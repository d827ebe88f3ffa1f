"""A synced tree on disk: entries (what a path is), scanning, and applying changes atomically.

What it is for: both ends of a sync session describe their tree as :class:`Entry` values and
apply the peer's changes with :class:`Applier`, which writes through a temporary file in the same
directory and renames it into place (mode and mtime set first), and applies each change only if
the path still is what the sender believed (``expect``): a compare-and-swap that turns a race with
a local writer into a reported conflict instead of a silent overwrite. The guest keeps an identical
copy of this module (``pydeskd.syncd.fstree``); host code may not import the guest package.
What it must never do: follow a symlink anywhere in a path (every path is resolved from the root
one component at a time with O_NOFOLLOW|O_DIRECTORY and used through directory handles: a path
below a link is absent, and writing there is refused), write outside the root, replace a name it
meant to create, or touch owner/group. The peer is not trusted: every path it names goes through
:func:`check_rel`.
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
_O_PATH: int = getattr(os, "O_PATH", 0)
_DIR_HANDLE = _O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
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
    Raises OSError (ENOENT, ENOTDIR: a component missing, a file, or a link; see ``_ABSENT``)."""
    fd = os.open(root, _DIR_HANDLE & ~os.O_NOFOLLOW)
    try:
        for part in check_rel(rel_dir).split("/") if rel_dir else ():
            child = _child(fd, part, create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _child(fd: int, part: str, create: bool) -> int:
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
        if e.errno in _ABSENT:
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
        if e.errno in _ABSENT:
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
        """A cached handle of ``rel_dir``; OSError as ``open_dir``."""
        fd = self._dirs.get(rel_dir)
        if fd is not None:
            return fd
        parent, _, name = rel_dir.rpartition("/")
        if not rel_dir:
            fd = open_dir(self.root, "")
        else:
            fd = _child(self._dir(parent, create), name, create)
        self._dirs[rel_dir] = fd
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
            if e.errno in _ABSENT:
                return None
            raise

    def _parent(self, rel: str) -> tuple[int, str]:
        """(parent handle, name) of ``rel``, making missing parents; a parent that is a
        symlink or a file raises UnsafePath."""
        parent, _, name = check_rel(rel).rpartition("/")
        try:
            return self._dir(parent, True), name
        except OSError as e:
            if e.errno in _ABSENT:
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
            os.unlink(src, dir_fd=src_fd)
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
    if os.chmod in os.supports_follow_symlinks or not _O_PATH:
        os.chmod(name, mode, dir_fd=dir_fd, follow_symlinks=False)
        return
    fd = os.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "a symlink: its mode is not changed", name)
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def _copy_into(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rewrites the existing file ``dst`` with ``src``'s content, mode and times (same inode)."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
    try:
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
