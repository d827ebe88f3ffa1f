"""Streaming a tar of a tree in a container's filesystem (``docker cp`` out, ``docker export``).

What it is for: :func:`tar_stream` yields the bytes of an uncompressed tar of one location and,
for a directory, everything below it, in chunks (a large file is never held in memory). The
walk is fd-based: each directory is opened relative to its parent's fd with ``O_NOFOLLOW``
(a symlink is archived as a symlink, never followed), each file is opened the same way, and a
directory whose container path is a mount destination is read from the mount's source (as
Docker's tar of the mounted view). Hardlinks within the archive are recorded once as a file
and then as links; sockets are skipped (tar cannot hold them). PAX format, as dockerd's: long
names, large files, names that are not UTF-8 kept byte for byte (``hdrcharset=BINARY``), and a
file's ``security.capability`` (the one xattr dockerd's tar carries).

Deep trees: the walk is iterative; it keeps one fd per directory level being walked, so a tree
deeper than the open-file limit fails with EMFILE (an error on the stream), never recursion.

What it must never do: follow a symlink, read a file outside the location's root or a mount
source, or buffer a whole file.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from pydeskd.daemon.containers.archive_fs import ContainerFS, Location

_CHUNK = 1 << 20
CAPABILITY_XATTR = "security.capability"
_BLOCK = tarfile.BLOCKSIZE
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass
class _Dir:
    fd: int
    names: list[str]   # still to archive, in reverse order (popped from the end)
    cpath: tuple[str, ...]
    tarname: str


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    info.uname = info.gname = ""
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _capability(fd: int) -> dict[str, str]:
    """A file's ``security.capability`` as the PAX record dockerd's tar writes (the only
    xattr it carries); the value round-trips through surrogateescape as ``attrs`` reads it."""
    try:
        value = os.getxattr(fd, CAPABILITY_XATTR)
    except OSError:
        return {}
    return {f"SCHILY.xattr.{CAPABILITY_XATTR}": value.decode("utf-8", "surrogateescape")}


def _join(parent: str, name: str) -> str:
    if not parent:
        return name
    return parent.rstrip("/") + "/" + name if parent != "/" else "/" + name


class _Walker:
    def __init__(self, fs: ContainerFS, follow_mounts: bool) -> None:
        self.fs = fs
        self.follow_mounts = follow_mounts
        self.links: dict[tuple[int, int], str] = {}
        self.stack: list[_Dir] = []

    def entry(self, parent_fd: int, name: str, st: os.stat_result, tarname: str, *,
              cpath: tuple[str, ...]) -> Iterator[bytes]:
        """The tar of one entry of ``parent_fd``; a directory is pushed on ``self.stack``."""
        if self.follow_mounts:
            mount = self.fs.mount_at(cpath)
            if mount is not None:
                yield from self.mounted(mount.source, tarname, cpath)
                return
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            yield from self.directory(fd, st, tarname, cpath)
        elif stat.S_ISREG(st.st_mode):
            yield from self.file(parent_fd, name, st, tarname)
        elif stat.S_ISLNK(st.st_mode):
            info = _info(tarname, st)
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=parent_fd)
            yield _header(info)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            info = _info(tarname, st)
            if stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
            else:
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            yield _header(info)
        # Sockets (and anything else) have no tar form: skipped, as Go's archive/tar does.

    def mounted(self, source: str, tarname: str, cpath: tuple[str, ...]) -> Iterator[bytes]:
        st = os.stat(source)
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            yield from self.directory(fd, st, tarname, cpath)
            return
        parent = os.open(os.path.dirname(source), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.stat(os.path.basename(source), dir_fd=parent, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                yield from self.file(parent, os.path.basename(source), st, tarname)
        finally:
            os.close(parent)

    def directory(self, fd: int, st: os.stat_result, tarname: str,
                  cpath: tuple[str, ...]) -> Iterator[bytes]:
        try:
            names = sorted(os.listdir(fd), reverse=True)
        except BaseException:
            os.close(fd)
            raise
        self.stack.append(_Dir(fd, names, cpath, tarname))
        info = _info(tarname.rstrip("/") + "/" if tarname != "/" else "/", st)
        info.type = tarfile.DIRTYPE
        yield _header(info)

    def file(self, parent_fd: int, name: str, st: os.stat_result,
             tarname: str) -> Iterator[bytes]:
        key = (st.st_dev, st.st_ino)
        info = _info(tarname, st)
        if st.st_nlink > 1 and key in self.links:
            info.type = tarfile.LNKTYPE
            info.linkname = self.links[key]
            yield _header(info)
            return
        fd = os.open(name, _FILE_FLAGS, dir_fd=parent_fd)
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode):
                return  # replaced by something else since it was listed
            if st.st_nlink > 1:
                self.links[key] = tarname
            info.size = now.st_size
            info.pax_headers = _capability(fd)
            yield _header(info)
            left = now.st_size
            while left > 0:
                chunk = os.read(fd, min(_CHUNK, left))
                if not chunk:
                    chunk = bytes(min(_CHUNK, left))  # shrank while read: the header said more
                left -= len(chunk)
                yield chunk
            if now.st_size % _BLOCK:
                yield bytes(_BLOCK - now.st_size % _BLOCK)
        finally:
            os.close(fd)


def tar_stream(fs: ContainerFS, loc: Location, top: str,
               follow_mounts: bool = True) -> Iterator[bytes]:
    """The tar of ``loc`` named ``top`` (entries below it are ``top/...``; ``top == ""`` names
    them relative, as ``docker export`` does). Raises FileNotFoundError if ``loc`` is missing,
    OSError when the filesystem fails (the stream then ends early)."""
    walker = _Walker(fs, follow_mounts)
    stack = walker.stack
    try:
        if not loc.parts:
            fd = os.open(loc.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.fstat(fd)
            if top:
                yield from walker.directory(fd, st, top, loc.container_path)
            else:
                stack.append(_Dir(fd, sorted(os.listdir(fd), reverse=True), loc.container_path,
                                  ""))
        else:
            pfd = fs.open_parent(loc)
            try:
                st = os.stat(loc.parts[-1], dir_fd=pfd, follow_symlinks=False)
                yield from walker.entry(pfd, loc.parts[-1], st, top, cpath=loc.container_path)
            finally:
                os.close(pfd)
        while stack:
            current = stack[-1]
            if not current.names:
                os.close(current.fd)
                stack.pop()
                continue
            name = current.names.pop()
            try:
                st = os.stat(name, dir_fd=current.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while walked
            yield from walker.entry(current.fd, name, st, _join(current.tarname, name),
                                    cpath=(*current.cpath, name))
        yield bytes(2 * _BLOCK)
    finally:
        for d in stack:
            os.close(d.fd)
