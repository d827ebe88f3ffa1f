"""A synced tree on disk: entries (what a path is), scanning, and applying changes atomically.

What it is for: both ends of a sync session describe their tree as :class:`Entry` values and
apply the peer's changes with :class:`Applier`, which writes through a temporary file in the same
directory and renames it into place (mode and mtime set first), and applies each change only if
the path still is what the sender believed (``expect``): a compare-and-swap that turns a race with
a local writer into a reported conflict instead of a silent overwrite. The host keeps an identical
copy of this module (``pydesk.sync.fstree``); host code may not import the guest package.
What it must never do: follow a symlink (a link in the tree is synced as a link, and no write goes
through a linked parent directory), write outside the root, or touch owner/group.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple

TEMP_PREFIX = ".pydesk-tmp-"
"""Temporary files of an apply in progress: never scanned, never reported, never synced."""

FILE, DIR, LINK = "f", "d", "l"


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


def lstat_entry(root: str, rel: str) -> Entry | None:
    """The entry at ``rel`` now, or None (absent, or a kind that is not synced)."""
    full = os.path.join(root, rel)
    try:
        st = os.lstat(full)
        target = os.readlink(full) if stat.S_ISLNK(st.st_mode) else ""
    except (FileNotFoundError, NotADirectoryError):
        return None
    return entry_from_stat(rel, st, target)


Skip = Callable[[str, bool], bool]
"""``skip(rel, is_dir)``: True for a path that is not synced (ignore rules)."""


def scan(root: str, skip: Skip | None = None) -> dict[str, Entry]:
    """Every synced entry under ``root`` (not the root itself), without following links."""
    out: dict[str, Entry] = {}
    for entry in walk(root, "", skip):
        out[entry.path] = entry
    return out


def walk(root: str, start: str, skip: Skip | None) -> Iterator[Entry]:
    stack = [start]
    while stack:
        rel_dir = stack.pop()
        try:
            it = os.scandir(os.path.join(root, rel_dir) if rel_dir else root)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with it:
            for de in it:
                if de.name.startswith(TEMP_PREFIX):
                    continue
                rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                try:
                    st = de.stat(follow_symlinks=False)
                    is_dir = stat.S_ISDIR(st.st_mode)
                    if skip is not None and skip(rel, is_dir):
                        continue
                    target = os.readlink(de.path) if stat.S_ISLNK(st.st_mode) else ""
                except FileNotFoundError:
                    continue
                entry = entry_from_stat(rel, st, target)
                if entry is None:
                    continue
                yield entry
                if is_dir:
                    stack.append(rel)


class Rejected(NamedTuple):
    """A change not applied because the path is no longer what the sender expected.

    ``current`` is what is there now; ``temp`` holds the received content (files) when the
    caller wants to keep it (the host resolves conflicts with it), else it was removed."""

    path: str
    current: Entry | None
    temp: str | None = None


class Applier:
    """Applies the peer's changes under ``root``; each ``expect`` is compared with the path's
    current entry first. ``inplace`` rewrites an existing file's inode instead of renaming over
    it (a single-file bind mount in a container keeps pointing at the old inode otherwise)."""

    def __init__(self, root: str, *, inplace: bool = False, keep_rejected: bool = False,
                 umask_zero: bool = False) -> None:
        self.root = root
        self.umask_zero = umask_zero
        """The process runs with umask 0 (the guest side does): a file gets its mode from
        open() and needs no fchmod (one syscall and one inotify event less per file)."""
        self.inplace = inplace
        self.keep_rejected = keep_rejected
        self._open: dict[str, tuple[int, str]] = {}  # path -> (fd, temp path) of files in transfer
        self._dirs_ok: set[str] = set()  # parents checked during the current message

    def new_message(self) -> None:
        """Forgets the parents checked so far: called per incoming message, so one batch of
        thousands of files checks each directory once, and the next batch checks again."""
        self._dirs_ok.clear()

    def full(self, rel: str) -> str:
        return os.path.join(self.root, check_rel(rel))

    def _parent_ok(self, rel: str) -> str:
        """Creates missing parents; refuses a parent that is a symlink or not a directory."""
        parent = rel.rpartition("/")[0]
        if not parent or parent in self._dirs_ok:
            return os.path.join(self.root, rel)
        cur = self.root
        for part in parent.split("/"):
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)  # not 0o777: the guest side runs with umask 0
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"parent {cur!r} of {rel!r} is not a directory")
        self._dirs_ok.add(parent)
        return os.path.join(self.root, rel)

    def file_chunk(self, entry: Entry, expect: Entry | None, offset: int, data: bytes,
                   final: bool, *, direct: bool = False) -> Rejected | None:
        """One piece of a file's content; the file appears (atomically) with the final piece.
        ``direct``: a whole new file (first sync, nobody reads yet) is written in place."""
        rel = check_rel(entry.path)
        if direct and offset == 0 and final and expect is None and not self.keep_rejected:
            return self._new_file(rel, entry, data)
        if offset == 0:
            self.abort(rel)
            full = self._parent_ok(rel)
            temp = os.path.join(os.path.dirname(full),
                                f"{TEMP_PREFIX}{os.urandom(4).hex()}-{os.path.basename(full)}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         entry.mode if self.umask_zero else 0o600)
            self._open[rel] = (fd, temp)
        if rel not in self._open:
            raise UnsafePath(f"content for {rel!r} at offset {offset} without its start")
        fd, temp = self._open[rel]
        if data:
            _write_all(fd, data)
        if not final:
            return None
        del self._open[rel]
        try:
            if not self.umask_zero:
                os.fchmod(fd, entry.mode)
        finally:
            os.close(fd)
        os.utime(temp, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
        current = lstat_entry(self.root, rel)
        if same(current, expect):
            try:
                self.install(temp, rel, current)
                return None
            except OSError:  # a directory in the way that is not empty
                current = lstat_entry(self.root, rel)
        if self.keep_rejected:
            return Rejected(rel, current, temp)
        os.unlink(temp)
        return Rejected(rel, current)

    def _new_file(self, rel: str, entry: Entry, data: bytes) -> Rejected | None:
        """A whole file where nothing is expected: O_EXCL is the compare-and-swap, and no
        temporary file or rename is needed (a third of the syscalls of a first sync). A reader
        may see it partly written for the time of one write."""
        full = self._parent_ok(rel)
        try:
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         entry.mode if self.umask_zero else 0o600)
        except FileExistsError:
            return Rejected(rel, lstat_entry(self.root, rel))
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
        """Moves a finished temporary file to ``rel`` (over whatever is there but a non-empty
        directory: OSError then)."""
        full = self.full(rel)
        if current is not None and current.kind == DIR:
            os.rmdir(full)
        if self.inplace and current is not None and current.kind == FILE:
            _copy_into(temp, full)
            os.unlink(temp)
            return
        os.rename(temp, full)

    def abort(self, rel: str) -> None:
        """Drops a half-received file (the sender gave up, or restarted it)."""
        fd_temp = self._open.pop(rel, None)
        if fd_temp is not None:
            os.close(fd_temp[0])
            _unlink_quiet(fd_temp[1])

    def abort_all(self) -> None:
        for rel in list(self._open):
            self.abort(rel)

    def mkdir(self, entry: Entry, expect: Entry | None) -> Rejected | None:
        rel = check_rel(entry.path)
        current = lstat_entry(self.root, rel)
        if current is not None and current.kind == DIR:
            # A directory is "the same" whatever its children: only its mode can differ.
            if current.mode != entry.mode:
                os.chmod(self.full(rel), entry.mode)
            return None
        if not same(current, expect):
            return Rejected(rel, current)
        full = self._parent_ok(rel)
        if current is not None:
            os.unlink(full)
            self._dirs_ok.clear()
        os.mkdir(full, 0o700)  # its own mode next
        os.chmod(full, entry.mode)
        return None

    def symlink(self, entry: Entry, expect: Entry | None) -> Rejected | None:
        self._dirs_ok.clear()
        rel = check_rel(entry.path)
        current = lstat_entry(self.root, rel)
        if same(current, entry):
            return None
        if not same(current, expect):
            return Rejected(rel, current)
        full = self._parent_ok(rel)
        temp = os.path.join(os.path.dirname(full), f"{TEMP_PREFIX}{os.urandom(4).hex()}")
        os.symlink(entry.target, temp)
        try:
            if current is not None and current.kind == DIR:
                os.rmdir(full)
            os.rename(temp, full)
        except OSError:
            _unlink_quiet(temp)
            return Rejected(rel, lstat_entry(self.root, rel))
        return None

    def remove(self, rel: str, expect: Entry | None) -> Rejected | None:
        """Deletes ``rel`` if it is still ``expect``; a directory only when empty (a child the
        sender did not know about must survive)."""
        self._dirs_ok.clear()
        rel = check_rel(rel)
        current = lstat_entry(self.root, rel)
        if current is None:
            return None
        if not same(current, expect):
            return Rejected(rel, current)
        full = self.full(rel)
        try:
            if current.kind == DIR:
                os.rmdir(full)
            else:
                os.unlink(full)
        except FileNotFoundError:
            pass
        except OSError:  # ENOTEMPTY: children the sender did not delete stay, with their dir
            return Rejected(rel, lstat_entry(self.root, rel))
        return None

    def rename(self, rel: str, to: str, expect: Entry | None) -> Rejected | None:
        """Renames ``rel`` to ``to`` if ``rel`` is still ``expect`` and ``to`` is free."""
        self._dirs_ok.clear()
        rel, to = check_rel(rel), check_rel(to)
        current = lstat_entry(self.root, rel)
        if current is None or not same(current, expect):
            return Rejected(rel, current)
        if lstat_entry(self.root, to) is not None:
            return Rejected(rel, current)
        os.rename(self.full(rel), self._parent_ok(to))
        return None


def read_chunks(root: str, entry: Entry, chunk: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) pieces of a file's content, at least one (empty files too)."""
    fd = os.open(os.path.join(root, entry.path), os.O_RDONLY | os.O_NOFOLLOW)
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


def _copy_into(src: str, dst: str) -> None:
    st = os.stat(src)
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        fout.truncate(0)
        while block := fin.read(1 << 20):
            fout.write(block)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
