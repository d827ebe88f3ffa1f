"""Walking a directory tree of any depth: iterative, fd-relative, never following a symlink.

What it is for: measuring a snapshot (``overlay.disk_usage``). A layer or a container can build
a tree deeper than Python's recursion limit and longer than PATH_MAX (symlinked parents let
entries continue below earlier ones), so the walk keeps an explicit stack, opens each directory
relative to its parent (``O_NOFOLLOW``, the ``lstat``-ed inode checked), and keeps fds only for
the top levels, re-opening a deeper ancestor through ``..`` of its child (its ``(dev, ino)``
checked), as ``removal`` does. Entries that vanish during the walk (a running container) are
skipped.

What it must never do: follow a symlink, recurse in Python, build a path string, or hold a
number of fds that grows with the depth of the tree.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FD_DEPTH = 64  # levels of the stack that keep their fd open


@dataclass
class _Frame:
    fd: int | None
    dev: int
    ino: int
    subdirs: list[str] = field(default_factory=list)


def _open_checked(parent_fd: int, name: str, st: os.stat_result) -> int | None:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:  # replaced by a symlink since it was listed
            return None
        raise
    if not os.path.samestat(os.fstat(fd), st):
        os.close(fd)
        return None
    return fd


def _reopen_parent(child_fd: int, parent: _Frame) -> int:
    """The fd of ``parent`` again, through ``..`` of its child; it must be the same inode."""
    fd = os.open("..", _DIR_FLAGS, dir_fd=child_fd)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
        os.close(fd)
        raise OSError(errno.ESTALE, "a directory moved while being walked")
    return fd


def stats_below(path: str | os.PathLike[str]) -> Iterator[os.stat_result]:
    """The ``lstat`` of every entry below directory ``path`` (not of ``path`` itself).

    Raises FileNotFoundError if ``path`` is missing, OSError if an ancestor moved mid-walk.
    """
    top = os.open(path, _DIR_FLAGS)
    top_st = os.fstat(top)
    stack = [_Frame(top, top_st.st_dev, top_st.st_ino)]
    try:
        scan = True
        while stack:
            frame = stack[-1]
            assert frame.fd is not None
            if scan:
                with os.scandir(frame.fd) as entries:
                    for entry in entries:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        yield st
                        if stat.S_ISDIR(st.st_mode):
                            frame.subdirs.append(entry.name)
                scan = False
            if frame.subdirs:
                name = frame.subdirs.pop()
                try:
                    st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                fd = _open_checked(frame.fd, name, st) if stat.S_ISDIR(st.st_mode) else None
                if fd is None:
                    continue
                if len(stack) > _FD_DEPTH:
                    os.close(frame.fd)
                    frame.fd = None
                stack.append(_Frame(fd, st.st_dev, st.st_ino))
                scan = True
                continue
            if len(stack) > 1 and stack[-2].fd is None:
                stack[-2].fd = _reopen_parent(frame.fd, stack[-2])
            stack.pop()
            os.close(frame.fd)
            frame.fd = None
    finally:
        for frame in stack:
            if frame.fd is not None:
                os.close(frame.fd)
