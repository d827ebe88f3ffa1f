"""``docker cp``: the archive endpoints of a container -- stat a path (HEAD), a tar of it (GET),
extract a tar into a directory (PUT) -- on running and stopped containers alike.

What it is for: the API routes call :func:`stat_path`, :func:`get_archive` and
:func:`put_archive`. The container's filesystem is its rootfs with its volumes, binds and the
/etc files the daemon mounts on top (:mod:`.archive_fs` resolves paths as Docker does, confined
to the root each lands in). A running container's rootfs is the snapshot the daemon mounted at
start; a stopped one's snapshot is mounted for the call at a temporary directory under
``<exec-root>/cp`` (read-only for reading) and unmounted after (for GET: when the stream ends).

Docker's rules kept: the path's last component is followed only with a trailing ``/`` or
``/.``; the stat header is base64 JSON ``{name, size, mode, mtime, linkTarget}`` with Go
``FileMode`` bits; a missing path is "Could not find the file P in container C" (404); PUT
needs an existing directory ("extraction point is not a directory", 400), refuses a read-only
rootfs ("container rootfs is marked read-only") or a read-only mount ("mounted volume is marked
read-only"); ``noOverwriteDirNonDir`` refuses to replace a directory by a non-directory or the
reverse; ``copyUIDGID`` gives everything extracted the container user's uid/gid (without it,
the tar's own). Tar entries are extracted by :mod:`pydeskd.containerd.archive.apply`'s confined
applier rooted at the destination directory: ``..`` is refused, symlinks resolve inside it.
A ``.wh.*`` name is copied as the plain file it is (docker cp is no layer: nothing is deleted);
top-level aufs metadata (``.wh..wh.*``) is skipped, as dockerd does.

What it must never do: read or write outside the container's rootfs and mount sources, leave a
temporary mount behind, or hold a container lock while streaming.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pydeskd.containerd.archive import attrs
from pydeskd.containerd.archive.apply import (
    AUFS_PREFIX,
    KNOWN_TYPES,
    WHITEOUT_PREFIX,
    Applier,
    run_applier,
)
from pydeskd.containerd.archive.confine import clean_name, lstat_at
from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.containerd.snapshots import mount as snapmount
from pydeskd.containerd.snapshots.removal import remove_entry
from pydeskd.daemon.containers.archive_fs import (
    ContainerFS,
    Location,
    mount_points,
    split_path,
)
from pydeskd.daemon.containers.archive_tar import tar_stream
from pydeskd.daemon.containers.record import Container
from pydeskd.daemon.ocispec import resolve_user
from pydeskd.shim.jsonlog import rfc3339nano

if TYPE_CHECKING:
    from pydeskd.daemon.containers.service import ContainerService

STAT_HEADER = "X-Docker-Container-Path-Stat"

# Go's os.FileMode type bits (io/fs), which the stat header carries.
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20


class ReadOnlyTarget(InvalidArgument):
    """A PUT into a read-only rootfs or mount: errdefs.InvalidParameter in current dockerd
    (HTTP 400; the API reference still lists 403, which old daemons answered)."""


def go_file_mode(st_mode: int) -> int:
    """A ``st_mode`` as Go's ``os.FileMode`` (what ``os.Lstat(...).Mode()`` returns)."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    mode |= {stat.S_IFDIR: GO_MODE_DIR, stat.S_IFLNK: GO_MODE_SYMLINK,
             stat.S_IFBLK: GO_MODE_DEVICE, stat.S_IFCHR: GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE,
             stat.S_IFIFO: GO_MODE_NAMED_PIPE, stat.S_IFSOCK: GO_MODE_SOCKET}.get(kind, 0)
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


@dataclass(frozen=True)
class PathStat:
    """Docker's ``container.PathStat``."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str = ""

    @classmethod
    def of(cls, name: str, st: os.stat_result, link_target: str = "") -> PathStat:
        return cls(name, st.st_size, go_file_mode(st.st_mode), rfc3339nano(st.st_mtime_ns),
                   link_target)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}

    def header(self) -> str:
        """The value of ``X-Docker-Container-Path-Stat``."""
        return base64.b64encode(json.dumps(self.to_json()).encode()).decode()


@dataclass(frozen=True)
class Request:
    """A requested path: its components, whether its last one is followed, its stat name."""

    parts: tuple[str, ...]
    follow_last: bool
    name: str

    @classmethod
    def parse(cls, path: str) -> Request:
        """Raises InvalidArgument for an empty path."""
        if not path:
            raise InvalidArgument("path cannot be empty")
        parts = split_path(path)
        dot = path == "." or path.endswith("/.")
        follow = dot or path.endswith("/") or not parts
        name = "." if dot else (parts[-1] if parts else "/")
        return cls(parts, follow, name)


def _not_found(path: str, ref: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {ref}")


def stat_in(fs: ContainerFS, path: str, ref: str) -> tuple[PathStat, Location]:
    """The stat of ``path`` in ``fs`` and where it is. Raises NotFound, InvalidArgument."""
    req = Request.parse(path)
    loc = fs.resolve(req.parts, req.follow_last)
    st = fs.lstat(loc)
    if st is None:
        raise _not_found(path, ref)
    target = ""
    if stat.S_ISLNK(st.st_mode):
        target = fs.resolve(loc.container_path, follow_last=True).display
    return PathStat.of(req.name, st, target), loc


@contextlib.contextmanager
def container_fs(svc: ContainerService, c: Container, read_only: bool,
                 with_mounts: bool = True) -> Iterator[ContainerFS]:
    """The container's filesystem for one call (see the module docstring)."""
    rootfs = svc.paths.rootfs(c.id)
    temp: Path | None = None
    if not os.path.ismount(rootfs):
        mounts = svc.images.stores.snapshotter.mounts(c.snapshot_key)
        if read_only:
            mounts = [replace(m, options=(*m.options, "ro")) for m in mounts]
        base = svc.paths.exec_root / "cp"
        base.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f"{c.short_id}-", dir=base))
        try:
            snapmount.perform(mounts, temp, svc.mounter)
        except BaseException:
            temp.rmdir()
            raise
        rootfs = temp
    etc = {"/etc/hostname": c.hostname_path, "/etc/hosts": c.hosts_path,
           "/etc/resolv.conf": c.resolv_conf_path}
    fs = ContainerFS(str(rootfs), mount_points(c.resolved_mounts, etc) if with_mounts else ())
    try:
        yield fs
    finally:
        fs.close()
        if temp is not None:
            snapmount.unmount(temp, svc.mounter, detach=True)
            with contextlib.suppress(OSError):
                temp.rmdir()


def stat_path(svc: ContainerService, ref: str, path: str) -> PathStat:
    """``HEAD /containers/{ref}/archive``. Raises NotFound (container or path)."""
    c = svc.get(ref)
    with container_fs(svc, c, read_only=True) as fs:
        return stat_in(fs, path, ref)[0]


def get_archive(svc: ContainerService, ref: str, path: str) -> tuple[PathStat, Iterator[bytes]]:
    """``GET /containers/{ref}/archive``: the stat and the tar's chunks. The container's view
    stays open until the iterator is exhausted or closed (or collected). Raises NotFound."""
    c = svc.get(ref)
    stack = contextlib.ExitStack()
    try:
        fs = stack.enter_context(container_fs(svc, c, read_only=True))
        pstat, loc = stat_in(fs, path, ref)
    except BaseException:
        stack.close()
        raise

    def chunks() -> Iterator[bytes]:
        with stack:
            yield from tar_stream(fs, loc, pstat.name)

    svc.publish(c, "archive-path")
    return pstat, chunks()


# --- PUT ---------------------------------------------------------------------------------------

class _CopyApplier(Applier):
    """The confined plain-mode layer applier with ``docker cp``'s rules on top."""

    def __init__(self, root: str, no_overwrite_dir_non_dir: bool,
                 owner: tuple[int, int] | None) -> None:
        super().__init__(root, overlay=False, lowers=())
        self.no_overwrite = no_overwrite_dir_non_dir
        self.owner = owner

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = clean_name(member.name)
        if parts and parts[0].startswith(AUFS_PREFIX):
            return  # aufs metadata at the top: skipped, as dockerd's untar does
        if self.no_overwrite and parts:
            self._check_overwrite(parts, member)
        if self.owner is not None:
            member.uid, member.gid = self.owner
        if parts and parts[-1].startswith(WHITEOUT_PREFIX):
            self._literal(tar, member, parts)
            return
        super().entry(tar, member)

    def _literal(self, tar: tarfile.TarFile, member: tarfile.TarInfo,
                 parts: tuple[str, ...]) -> None:
        """A ``.wh.*`` name is a plain file here (docker cp is no layer): created as its
        type says, never read as a whiteout that deletes something."""
        if member.type not in KNOWN_TYPES:
            raise InvalidArgument(f"tar entry {member.name!r}: unsupported type {member.type!r}")
        self._drop_cache()
        if member.islnk():
            self._hardlink(parts, member)
            return
        with self._parent(parts) as pfd:
            base = parts[-1]
            existing = lstat_at(pfd, base)
            keep_dir = existing is not None and member.isdir() and stat.S_ISDIR(existing.st_mode)
            if existing is not None and not keep_dir:
                remove_entry(pfd, base)
            self._mark(parts)
            if member.isdir():
                self._dir(pfd, parts, member, exists=keep_dir)
            elif member.isreg():
                self._file(tar, pfd, base, member)
            elif member.issym():
                os.symlink(member.linkname, base, dir_fd=pfd)
                attrs.apply_symlink(pfd, base, attrs.Meta.of(member))
            else:
                self._node(pfd, parts, member)

    def _check_overwrite(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        self._drop_cache()
        with self.root.parent(parts, create=False) as pfd:
            existing = lstat_at(pfd, parts[-1]) if pfd is not None else None
        if existing is None:
            return
        is_dir = stat.S_ISDIR(existing.st_mode)
        shown = "/" + "/".join(parts)
        if is_dir and not member.isdir():
            raise InvalidArgument(f"cannot overwrite directory {shown!r} with non-directory "
                                  f"{member.name!r}")
        if not is_dir and member.isdir():
            raise InvalidArgument(f"cannot overwrite non-directory {shown!r} with directory "
                                  f"{member.name!r}")


def extract(stream: IO[bytes], dir_fd: int, no_overwrite_dir_non_dir: bool = False,
            owner: tuple[int, int] | None = None) -> None:
    """Extract the uncompressed tar ``stream`` into the opened directory ``dir_fd`` (the
    confinement root). Raises InvalidArgument (hostile or malformed tar, overwrite refused)."""
    run_applier(_CopyApplier(f"/proc/self/fd/{dir_fd}", no_overwrite_dir_non_dir, owner),
                stream, "tar")


def put_archive(svc: ContainerService, ref: str, path: str, stream: IO[bytes], *,
                no_overwrite_dir_non_dir: bool = False, copy_uid_gid: bool = False) -> None:
    """``PUT /containers/{ref}/archive``. Raises NotFound, InvalidArgument (ReadOnlyTarget)."""
    c = svc.get(ref)
    req = Request.parse(path)
    # The container's lock is held for the extraction, as dockerd does: a start or stop cannot
    # mount or unmount the snapshot under it. (The body is already spooled: this is bounded
    # by the disk, never by the client.)
    with svc.condition(c.id), container_fs(svc, c, read_only=False) as fs:
        loc = fs.resolve(req.parts, follow_last=True)
        st = fs.lstat(loc)
        if st is None:
            raise _not_found(path, ref)
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument("extraction point is not a directory")
        if loc.mount is not None:
            if loc.mount.read_only:
                raise ReadOnlyTarget("mounted volume is marked read-only")
        elif c.host_config.get("ReadonlyRootfs"):
            raise ReadOnlyTarget("container rootfs is marked read-only")
        owner = None
        user = str(c.config.get("User") or "")
        if copy_uid_gid and user:
            resolved = resolve_user(fs.rootfs, user)
            owner = (resolved.uid, resolved.gid)
        try:
            dir_fd = fs.open_dir(loc)
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidArgument("extraction point is not a directory") from None
        try:
            extract(stream, dir_fd, no_overwrite_dir_non_dir, owner)
        finally:
            os.close(dir_fd)
    svc.publish(c, "extract-to-dir")
