"""Filling a new volume with the image's content at its mount point, as Docker does.

What it is for: ``docker run -v data:/etc image`` with a new, empty volume first copies the
image's ``/etc`` into it (files, directories, symlinks, hardlinks, devices, fifos; owners, modes,
allowed xattrs and times), and the volume's top directory takes the owner and mode of the
image's directory (moby's ``copyExistingContents`` + ``copyOwnership``).

The image is hostile input. The mount point is resolved inside the container's rootfs by the
kernel (``openat2`` with ``RESOLVE_IN_ROOT``, :class:`confine.Root`): a symlinked ``/data ->
/../../host`` lands inside the rootfs, never outside it. Below it, every entry is opened
relative to its parent's fd with ``O_NOFOLLOW`` and checked to be the inode that was
``lstat``-ed; symlinks are copied as symlinks (inert data), never followed. Writes go to fds
of directories this copy created inside the volume, one path component at a time.

What it must never do: follow a symlink of the image while reading, write outside the volume,
or copy into a volume that already has content (the caller checks it is empty).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydeskd.containerd.archive.attrs import xattr_allowed
from pydeskd.containerd.archive.confine import Root
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.snapshots import Mount
from pydeskd.containerd.snapshots import mount as snapmount

log = logging.getLogger(__name__)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Directory levels copied at most: each level holds two fds while its children are copied.
MAX_DEPTH = 256
_CHUNK = 1 << 20


def is_empty(path: Path) -> bool:
    """True if ``path`` is a directory with no entries (missing counts as empty)."""
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return True


def container_parts(destination: str) -> tuple[str, ...]:
    return tuple(p for p in destination.split("/") if p not in ("", "."))


def fill(rootfs: Path, destination: str, data: Path) -> bool:
    """Copy the content of container path ``destination`` (resolved inside ``rootfs``) into
    the directory ``data``. False when the image has no directory there (nothing copied).
    Raises OSError (disk full, ...) or InvalidArgument (a tree deeper than MAX_DEPTH)."""
    with Root(rootfs) as root:
        try:
            src = root.open(container_parts(destination), os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError, InvalidArgument):
            return False
        except OSError as err:
            if err.errno == errno.ELOOP:
                return False
            raise
    try:
        dst = os.open(data, _DIR)
        try:
            _Copy().tree(src, dst)
            top = os.fstat(src)
            _chown(dst, top)
            os.chmod(dst, stat.S_IMODE(top.st_mode))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return True


@dataclass
class _Level:
    src: int
    dst: int
    st: os.stat_result
    names: list[str]
    parts: tuple[str, ...]     # this directory's path inside the volume


@dataclass
class _Copy:
    # First copy of each multiply-linked inode: (dev, ino) -> its path inside the volume.
    links: dict[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)
    stack: list[_Level] = field(default_factory=list)
    volume_fd: int = -1

    def tree(self, src: int, dst: int) -> None:
        self.volume_fd = dst
        self.stack.append(_Level(os.dup(src), os.dup(dst), os.fstat(src),
                                 sorted(os.listdir(src), reverse=True), ()))
        try:
            while self.stack:
                level = self.stack[-1]
                if not level.names:
                    self.stack.pop()
                    try:
                        if len(self.stack) > 0:  # the top directory is the caller's to finish
                            _finish_dir(level.src, level.dst, level.st)
                    finally:
                        os.close(level.src)
                        os.close(level.dst)
                    continue
                self.entry(level, level.names.pop())
        finally:
            for level in self.stack:
                os.close(level.src)
                os.close(level.dst)
            self.stack.clear()

    def entry(self, level: _Level, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=level.src, follow_symlinks=False)
        except FileNotFoundError:
            return
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.directory(level, name, st)
        elif stat.S_ISREG(mode):
            self.regular(level, name, st)
        elif stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=level.src)
            os.symlink(target, name, dir_fd=level.dst)
            with contextlib.suppress(PermissionError):
                os.chown(name, st.st_uid, st.st_gid, dir_fd=level.dst, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=level.dst,
                     follow_symlinks=False)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            if self.linked(level, name, st):
                return
            try:
                if stat.S_ISFIFO(mode):
                    os.mkfifo(name, 0o600, dir_fd=level.dst)
                else:
                    os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=level.dst)
            except PermissionError:
                log.warning("cannot create device %s in a volume (no privilege)", name)
                return
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=level.dst)
            try:
                proc = f"/proc/self/fd/{fd}"
                with contextlib.suppress(PermissionError):
                    os.chown(proc, st.st_uid, st.st_gid)
                os.chmod(proc, stat.S_IMODE(mode))
                os.utime(proc, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)
            self.remember(level, name, st)
        # sockets are not copied (moby's CopyDir skips them too)

    def directory(self, level: _Level, name: str, st: os.stat_result) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise InvalidArgument(f"cannot fill a volume: the image's tree is deeper than "
                                  f"{MAX_DEPTH} levels")
        src = os.open(name, _DIR, dir_fd=level.src)
        try:
            opened = os.fstat(src)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise OSError(errno.ESTALE, "the image changed while it was copied", name)
            os.mkdir(name, 0o700, dir_fd=level.dst)
            dst = os.open(name, _DIR, dir_fd=level.dst)
        except BaseException:
            os.close(src)
            raise
        self.stack.append(_Level(src, dst, st, sorted(os.listdir(src), reverse=True),
                                 (*level.parts, name)))

    def regular(self, level: _Level, name: str, st: os.stat_result) -> None:
        if self.linked(level, name, st):
            return
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=level.src)
        try:
            opened = os.fstat(src)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise OSError(errno.ESTALE, "the image changed while it was copied", name)
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=level.dst)
            try:
                _copy_data(src, dst, st.st_size)
                _chown(dst, st)
                _copy_xattrs(src, dst)
                os.chmod(dst, stat.S_IMODE(st.st_mode))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.remember(level, name, st)

    def linked(self, level: _Level, name: str, st: os.stat_result) -> bool:
        """Hardlink ``name`` to the first copy of its inode, if one was made."""
        first = self.links.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
        if first is None:
            return False
        with Root(f"/proc/self/fd/{self.volume_fd}") as volume:
            parent = volume.open(first[:-1], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.link(first[-1], name, src_dir_fd=parent, dst_dir_fd=level.dst,
                    follow_symlinks=False)
        finally:
            os.close(parent)
        return True

    def remember(self, level: _Level, name: str, st: os.stat_result) -> None:
        if st.st_nlink > 1:
            self.links.setdefault((st.st_dev, st.st_ino), (*level.parts, name))


def _copy_data(src: int, dst: int, size: int) -> None:
    offset = 0
    while True:
        sent = os.sendfile(dst, src, offset, max(_CHUNK, size - offset))
        if sent == 0:
            return
        offset += sent


def _chown(fd: int, st: os.stat_result) -> None:
    try:
        os.fchown(fd, st.st_uid, st.st_gid)
    except PermissionError:
        if os.geteuid() == 0:
            raise


def _copy_xattrs(src: int, dst: int) -> None:
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        if not xattr_allowed(name):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name))
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EPERM, errno.ENODATA):
                raise
            log.info("xattr %s not copied into a volume: %s", name, err.strerror)


def _finish_dir(src: int, dst: int, st: os.stat_result) -> None:
    _chown(dst, st)
    _copy_xattrs(src, dst)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


@contextlib.contextmanager
def mounted_rootfs(mounts: Sequence[Mount], target: Path,
                   mounter: snapmount.Mounter | None = None) -> Iterator[Path]:
    """A container's root filesystem (its snapshot's ``mounts``) at ``target`` for a copy;
    the directories made for it are removed again (they are the container's bundle, which
    its first start makes)."""
    made = [p for p in (target.parent, target) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    try:
        with snapmount.mounted(mounts, target, mounter) as root:
            yield root
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
