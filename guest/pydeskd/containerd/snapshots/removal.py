"""Removing directory trees of any depth: iterative, fd-based, never following a symlink.

What it is for: a layer is hostile input, and nothing bounds how deep its directories go (a
name is at most 4095 bytes, but symlinked parents let later entries continue below earlier
ones). Python's ``shutil.rmtree`` recurses (3.11) and raises RecursionError past ~1000 levels,
which once made a 1500-deep layer impossible to remove *and* stopped the image service from
opening (its recovery removes leftovers). Here the tree is walked with an explicit stack:

- each directory is opened relative to its parent's fd with ``O_NOFOLLOW`` and checked to be
  the inode that was ``lstat``-ed (a swap in between is an error, not a followed link);
- its non-directory entries are unlinked at once (``unlinkat``: a symlink is removed, never
  followed), its subdirectories are queued, then each is emptied and ``rmdir``-ed in turn;
- only the top ``_FD_DEPTH`` levels keep their fd while a deeper one is worked on; a deeper
  ancestor is re-opened through ``..`` of its child on the way up, and its ``(dev, ino)`` must
  match, so the fds in use stay bounded however deep the tree is;
- a directory without owner ``rwx`` (a layer's 0555 or 0000) is made 0700 first, so removal
  works without root too (``import`` by a normal user); immutable files are not handled (a
  layer cannot set the flag);
- a subdirectory on another device (a mount point left below the tree) stops the removal with
  ``EXDEV``: emptying it would delete another filesystem's files.

What it must never do: follow a symlink, descend into another filesystem, recurse in Python, or
hold a number of fds that grows with the depth of the tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Levels of the stack that keep their directory fd open; deeper ones re-open through "..".
_FD_DEPTH = 64
# A directory that is still not empty after this many rescans is being written to: give up.
_RESCANS = 8


@dataclass
class _Frame:
    """One directory being emptied: its fd (None while a deep descendant is worked on)."""

    fd: int | None
    name: str  # its name in the parent directory
    dev: int
    ino: int
    subdirs: list[str] = field(default_factory=list)
    rescans: int = 0


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_dir(parent_fd: int, name: str, st: os.stat_result) -> int:
    """Open directory ``name`` (the inode ``st``) for emptying, making it 0700 if it must be."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        # Not readable (mode 0000 without root): chmod the inode itself through an O_PATH fd
        # (which names it without following anything), then open it through that fd.
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            if not os.path.samestat(os.fstat(path_fd), st):
                raise OSError(errno.ESTALE, f"{name!r} was replaced while being removed") \
                    from None
            os.chmod(f"/proc/self/fd/{path_fd}", 0o700)
            fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            os.close(path_fd)
    try:
        now = os.fstat(fd)
        if not os.path.samestat(now, st):
            raise OSError(errno.ESTALE, f"{name!r} was replaced while being removed")
        if stat.S_IMODE(now.st_mode) & 0o700 != 0o700:
            os.fchmod(fd, 0o700)  # entries of a 0555 directory cannot be unlinked without root
        return fd
    except BaseException:
        os.close(fd)
        raise


def _scan(frame: _Frame) -> None:
    """Unlink every non-directory of ``frame`` now; queue its subdirectories."""
    assert frame.fd is not None
    frame.subdirs = []
    with os.scandir(frame.fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                frame.subdirs.append(entry.name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=frame.fd)


def _enter(parent_fd: int, name: str, st: os.stat_result, rescans: int = 0) -> _Frame:
    frame = _Frame(_open_dir(parent_fd, name, st), name, st.st_dev, st.st_ino, rescans=rescans)
    try:
        _scan(frame)
    except BaseException:
        assert frame.fd is not None
        os.close(frame.fd)
        raise
    return frame


def _reopen_parent(child_fd: int, parent: _Frame) -> int:
    """The fd of ``parent`` again, through ``..`` of its child; it must be the same inode."""
    fd = os.open("..", _DIR_FLAGS, dir_fd=child_fd)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
        os.close(fd)
        raise OSError(errno.ESTALE, f"{parent.name!r} was moved while being removed")
    return fd


def _remove_dir(top_parent_fd: int, name: str, st: os.stat_result) -> None:
    if os.fstat(top_parent_fd).st_dev != st.st_dev:
        raise OSError(errno.EXDEV, f"{name!r} is a mount point: not removed")
    stack = [_enter(top_parent_fd, name, st)]
    try:
        while stack:
            frame = stack[-1]
            assert frame.fd is not None
            if frame.subdirs:
                child = frame.subdirs.pop()
                cst = _lstat(frame.fd, child)
                if cst is None:
                    continue
                if not stat.S_ISDIR(cst.st_mode):  # replaced since the scan
                    os.unlink(child, dir_fd=frame.fd)
                    continue
                if cst.st_dev != frame.dev:
                    raise OSError(errno.EXDEV, f"{child!r} is a mount point: not removed")
                entered = _enter(frame.fd, child, cst)
                if len(stack) > _FD_DEPTH:
                    os.close(frame.fd)
                    frame.fd = None
                stack.append(entered)
                continue
            # Emptied: rmdir it from its parent (re-opened through ".." if it gave its fd up).
            if len(stack) > 1:
                parent = stack[-2]
                if parent.fd is None:
                    parent.fd = _reopen_parent(frame.fd, parent)
                parent_fd = parent.fd
            else:
                parent_fd = top_parent_fd
            stack.pop()
            os.close(frame.fd)
            frame.fd = None
            try:
                os.rmdir(frame.name, dir_fd=parent_fd)
            except FileNotFoundError:
                pass
            except OSError as err:
                # Something was created in it after the scan: scan it again, a few times.
                if err.errno != errno.ENOTEMPTY or frame.rescans >= _RESCANS:
                    raise
                again = _lstat(parent_fd, frame.name)
                if again is not None:
                    stack.append(_enter(parent_fd, frame.name, again, frame.rescans + 1))
    finally:
        for frame in stack:
            if frame.fd is not None:
                os.close(frame.fd)


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` (a whole tree if a directory); absent is fine.

    Raises OSError (EXDEV for a mount point in the tree, ESTALE for a tree changed underneath).
    """
    st = _lstat(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        _remove_dir(dir_fd, name, st)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


def empty_dir(dir_fd: int, keep: frozenset[str] = frozenset()) -> None:
    """Remove every entry of an opened directory except the names in ``keep``."""
    for name in os.listdir(dir_fd):
        if name not in keep:
            remove_entry(dir_fd, name)


def remove_path(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` (a tree, a file, or a symlink itself, never its target); absent is fine."""
    path = os.fspath(path)
    head, name = os.path.split(path.rstrip("/") or "/")
    if name in ("", ".", ".."):
        raise ValueError(f"refusing to remove {path!r}")
    try:
        parent_fd = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_entry(parent_fd, name)
    finally:
        os.close(parent_fd)
