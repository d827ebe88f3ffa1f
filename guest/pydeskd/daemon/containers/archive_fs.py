"""A container's filesystem as ``docker cp`` sees it: the rootfs with the container's mounts on
top, every lookup confined to the root it lands in.

What it is for: ``docker cp`` names paths *inside* the container. Docker resolves them as if the
rootfs were ``/`` (an absolute symlink restarts at the rootfs, ``..`` stops there) and through
the container's mounts (a path under a volume or bind destination is in its source). Here:

- :meth:`ContainerFS.resolve` walks the path one component at a time in userspace, as moby's
  ``FollowSymlinkInScope``: a symlink's target is spliced into the rest of the path (restarting
  at ``/`` when absolute), ``..`` pops a resolved component (never above ``/``), and before each
  lookup the longest mount destination that prefixes the resolved path chooses the root to
  look in (the rootfs or the mount's source). The result is a :class:`Location`: a root on the
  host and the symlink-free components below it.
- every open is then done by the kernel inside that root (``openat2`` with ``RESOLVE_IN_ROOT``,
  :mod:`pydeskd.containerd.archive.confine`), so a symlink swapped in by the running container
  between the walk and the open can still only land inside the same root;
- the final component is followed only when asked (``docker cp C:/link`` copies the link).

A ``tmpfs`` mount is not seen (it lives in the container's mount namespace only): its
destination reads as the rootfs directory below it.

What it must never do: open, stat or write a host path that is neither below the rootfs nor
below a mount source of this container, whatever the container put in its filesystem.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydeskd.containerd.archive.confine import RESOLVE_NO_SYMLINKS, Root, lstat_at
from pydeskd.containerd.errors import InvalidArgument

MAX_LINKS = 255  # symlinks followed in one resolution (Linux's own limit is 40 per lookup)


@dataclass(frozen=True)
class MountPoint:
    """A mount that ``docker cp`` honours: container destination -> host source."""

    destination: tuple[str, ...]
    source: str
    read_only: bool = False
    volume: bool = False

    @property
    def is_file(self) -> bool:
        return not os.path.isdir(self.source)


@dataclass(frozen=True)
class Location:
    """Where a resolved container path is: ``root`` (a host directory) and ``parts`` below it.

    ``parts`` is empty when the path is the root itself (the rootfs or a mount's source).
    """

    root: str
    parts: tuple[str, ...]
    container_path: tuple[str, ...]
    mount: MountPoint | None = None

    @property
    def display(self) -> str:
        return "/" + "/".join(self.container_path)


def split_path(path: str) -> tuple[str, ...]:
    """The components of a container path after Go's ``filepath.Clean("/" + path)``."""
    clean = posixpath.normpath("/" + path)
    return tuple(p for p in clean.split("/") if p)


def mount_points(record_mounts: Sequence[Mapping[str, Any]],
                 etc_files: Mapping[str, str] | None = None) -> list[MountPoint]:
    """The mounts of a container record (``resolved_mounts``) that have a host source, plus the
    /etc files the daemon bind-mounts (destination -> host file). tmpfs mounts are left out."""
    out: list[MountPoint] = []
    for m in record_mounts:
        if m.get("type") not in ("bind", "volume") or not m.get("source"):
            continue
        out.append(MountPoint(split_path(str(m["destination"])), str(m["source"]),
                              bool(m.get("read_only")), m.get("type") == "volume"))
    taken = {m.destination for m in out}
    for dest, source in (etc_files or {}).items():
        if split_path(dest) not in taken and source:
            out.append(MountPoint(split_path(dest), source))
    return out


class ContainerFS:
    """The rootfs at ``rootfs`` with ``mounts`` on top; close it (or use ``with``) when done."""

    def __init__(self, rootfs: str, mounts: Sequence[MountPoint] = ()) -> None:
        self.rootfs = rootfs
        # Longest destination first: the most specific mount wins.
        self.mounts = sorted(mounts, key=lambda m: len(m.destination), reverse=True)
        self._roots: dict[str, Root] = {}

    def close(self) -> None:
        for root in self._roots.values():
            root.close()
        self._roots.clear()

    def __enter__(self) -> ContainerFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def root(self, path: str) -> Root:
        """The opened confinement root ``path`` (kept for the life of this object)."""
        root = self._roots.get(path)
        if root is None:
            root = self._roots[path] = Root(path)
        return root

    def mount_at(self, cpath: tuple[str, ...]) -> MountPoint | None:
        """The mount whose destination is exactly ``cpath``."""
        for m in self.mounts:
            if m.destination == cpath:
                return m
        return None

    def locate(self, cpath: tuple[str, ...]) -> Location:
        """The root and parts of a symlink-free container path (the longest mount prefix)."""
        for m in self.mounts:
            n = len(m.destination)
            if cpath[:n] == m.destination:
                rest = cpath[n:]
                if m.is_file:
                    # A file mount: its directory is the root, the file its only entry.
                    if rest:
                        return Location(os.path.dirname(m.source), (os.path.basename(m.source),
                                                                    *rest), cpath, m)
                    return Location(os.path.dirname(m.source), (os.path.basename(m.source),),
                                    cpath, m)
                return Location(m.source, rest, cpath, m)
        return Location(self.rootfs, cpath, cpath, None)

    def lstat(self, loc: Location) -> os.stat_result | None:
        """``lstat`` of the location (its last component never followed); None if missing or a
        parent is not a directory."""
        if not loc.parts:
            try:
                return os.stat(loc.root)
            except FileNotFoundError:
                return None
        try:
            pfd = self.root(loc.root).open(loc.parts[:-1], os.O_PATH | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return lstat_at(pfd, loc.parts[-1])
        finally:
            os.close(pfd)

    def readlink(self, loc: Location) -> str:
        pfd = self.root(loc.root).open(loc.parts[:-1], os.O_PATH | os.O_DIRECTORY)
        try:
            return os.readlink(loc.parts[-1], dir_fd=pfd)
        finally:
            os.close(pfd)

    def resolve(self, path: str | tuple[str, ...], follow_last: bool) -> Location:
        """Resolve a container path (see the module docstring). A missing component ends the
        symlink evaluation there (the rest is taken literally, as moby does). Raises
        InvalidArgument after too many symlinks."""
        todo = list(split_path(path) if isinstance(path, str) else path)
        resolved: list[str] = []
        links = 0
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = (*resolved, name)
            if not todo and not follow_last:
                resolved.append(name)
                break
            loc = self.locate(candidate)
            st = self.lstat(loc) if loc.parts else None
            if st is None or not stat.S_ISLNK(st.st_mode):
                resolved.append(name)
                continue
            links += 1
            if links > MAX_LINKS:
                raise InvalidArgument(f"{'/' + '/'.join(candidate)}: too many links")
            target = self.readlink(loc)
            if target.startswith("/"):
                resolved = []
            todo[:0] = [p for p in target.split("/") if p]
        return self.locate(tuple(resolved))

    # --- opening what a Location names -------------------------------------------------------

    def open_parent(self, loc: Location) -> int:
        """A directory fd of the location's parent, resolved inside its root (the parts carry
        no symlinks: one that a racing container puts there is refused, not followed)."""
        return self.root(loc.root).open(loc.parts[:-1], os.O_RDONLY | os.O_DIRECTORY,
                                        RESOLVE_NO_SYMLINKS)

    def open_dir(self, loc: Location) -> int:
        """A directory fd of the location itself (never through a symlink).
        Raises FileNotFoundError, NotADirectoryError, OSError(ELOOP) for a symlink."""
        try:
            return self.root(loc.root).open(loc.parts, os.O_RDONLY | os.O_DIRECTORY,
                                            RESOLVE_NO_SYMLINKS)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise NotADirectoryError(errno.ENOTDIR, "a symlink", loc.display) from None
            raise
