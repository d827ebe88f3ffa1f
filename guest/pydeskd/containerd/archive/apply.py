"""Applying a layer tar to a directory: entries, whiteouts, hardlinks, metadata, confined.

What it is for: the last step of unpacking. Two modes, as containerd's ``pkg/archive``:

- **overlay** (``apply_layer`` on an overlay ``Mount``): the tar is written straight into the
  snapshot's upperdir; whiteouts become what overlayfs reads (``.wh.NAME`` -> char device 0/0
  ``NAME``; ``.wh..wh..opq`` -> xattr ``trusted.overlay.opaque=y`` on the directory). The lower
  layers are consulted for missing parent directories and hardlink copy-ups (``lowers``).
- **plain** (a bind ``Mount``, or ``apply_tar(..., overlay=False)``): a whiteout deletes the
  named entry; an opaque marker empties the directory of everything this layer did not write.
  Used for a first layer, for ``import``, and by unit tests without root.

Rules beyond ``confine``'s path rules: an existing entry of another type is replaced (a
directory over a directory is kept and re-stat'ed); a hardlink's target must already exist in
this layer or below; a whiteout of ``..``, ``.`` or "" is rejected; aufs metadata
(``.wh..wh.*`` other than the opaque marker) is skipped; unknown entry types are rejected;
device nodes need root (FailedPrecondition otherwise) and are created inside the snapshot only
(the runtime's device cgroup is what keeps a container from using a host device node).
Directory modes and times are set after all their content (found again by inode: a directory
reached through a symlinked parent gets them too).

Depth is not capped (decided; neither containerd nor moby caps it, so an image Docker runs is
never refused for it): a name is at most 4095 bytes, but a symlinked parent lets a layer build
trees of any depth, so everything that walks a snapshot must be iterative, never recursive
(``snapshots.removal`` removes them; ``overlay.disk_usage`` measures them).

What it must never do: follow a symlink when creating, chmod'ing, chown'ing or touching an entry;
write outside the root; leave a half-applied layer looking complete (the unpacker removes the
snapshot when ``apply_layer`` raises).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from pydeskd.containerd.archive import attrs
from pydeskd.containerd.archive.compression import DiffReader, open_layer
from pydeskd.containerd.archive.confine import Root, clean_name, lstat_at
from pydeskd.containerd.archive.lowers import Lowers
from pydeskd.containerd.archive.target import layer_target, syncfs
from pydeskd.containerd.content import ReaderAt
from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument, NotFound
from pydeskd.containerd.snapshots import Mount
from pydeskd.containerd.snapshots.removal import empty_dir as empty_dir_at
from pydeskd.containerd.snapshots.removal import remove_entry as remove_at

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_PREFIX = ".wh..wh."
_CHUNK = 1 << 20
KNOWN_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE,
                          tarfile.GNUTYPE_SPARSE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                          tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class ApplyResult:
    """``diff_id``: sha256 of the uncompressed tar; ``size``: its length in bytes."""

    diff_id: str
    size: int


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _show(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


class Applier:
    def __init__(self, root: str, overlay: bool, lowers: Sequence[str]) -> None:
        self.root = Root(root)
        self.overlay = overlay
        self.lowers = Lowers(lowers) if overlay and lowers else None
        # Directory modes and times, set when the layer is done (as GNU tar's delayed set_stat):
        # adding entries changes a directory's mtime, and a 0555 directory must still be
        # writable while its entries are created (without root, too). Keyed by the directory's
        # (dev, ino), with the path its entry named: two names can reach one directory (one
        # through a symlinked parent, ``lib/sub`` for ``usr/lib/sub``), and the last entry of
        # that directory wins whichever name it used.
        self.dir_meta: dict[tuple[int, int], tuple[tuple[str, ...], int, tuple[int, int]]] = {}
        self.written: set[tuple[str, ...]] = set()
        # The last parent directory opened, kept for the next entry (tars list a directory's
        # entries together): saves re-resolving every component. Dropped before anything that
        # could remove or replace that directory (whiteouts, opaque markers, hardlinks).
        self._cached: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        self._drop_cache()
        self.root.close()
        if self.lowers is not None:
            self.lowers.close()

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _cached_parent(self, parts: tuple[str, ...]) -> int:
        """The fd of ``parts``' parent (created if missing); borrowed: do not close it."""
        if self._cached is not None and self._cached[0] == parts[:-1]:
            return self._cached[1]
        creator = self.lowers.make_dir if self.lowers is not None else None
        fd = self.root.make_parents(parts[:-1], creator)
        self._drop_cache()
        self._cached = (parts[:-1], fd)
        return fd

    @contextlib.contextmanager
    def _parent(self, parts: tuple[str, ...]) -> Iterator[int]:
        creator = self.lowers.make_dir if self.lowers is not None else None
        fd = self.root.make_parents(parts[:-1], creator)
        try:
            yield fd
        finally:
            os.close(fd)

    def _mark(self, parts: tuple[str, ...]) -> None:
        """Remember that this layer wrote ``parts`` (and so its parents): opaque keeps them."""
        for i in range(1, len(parts) + 1):
            self.written.add(parts[:i])

    # --- entries ------------------------------------------------------------------------------

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if member.type not in KNOWN_TYPES:
            raise InvalidArgument(f"tar entry {member.name!r}: unsupported type {member.type!r}")
        parts = clean_name(member.name)
        if not parts:
            if not member.isdir():
                raise InvalidArgument(f"tar entry {member.name!r}: the root, but not a directory")
            self._root_dir(member)
            return
        if parts[0].startswith(AUFS_PREFIX) and parts != (OPAQUE_MARKER,):
            return  # aufs metadata (.wh..wh.plnk/, .wh..wh.aufs): meaningless here
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._drop_cache()
            self._whiteout(parts)
            return
        if member.islnk():
            self._drop_cache()
            self._hardlink(parts, member)
            return
        # Removing or replacing ``base`` below cannot invalidate its own parent's fd.
        pfd = self._cached_parent(parts)
        existing = lstat_at(pfd, base)
        keep_dir = existing is not None and member.isdir() and stat.S_ISDIR(existing.st_mode)
        if existing is not None and not keep_dir:
            remove_at(pfd, base)
        self._mark(parts)
        if member.isdir():
            self._dir(pfd, parts, member, exists=keep_dir)
            if self.overlay and existing is not None and _is_whiteout(existing):
                # Whited out, then re-created in this layer: nothing of the lower directory may
                # show through, which in overlayfs terms is an opaque directory.
                fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
                try:
                    os.setxattr(fd, attrs.OVERLAY_OPAQUE, b"y")
                finally:
                    os.close(fd)
        elif member.isreg():
            self._file(tar, pfd, base, member)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
            attrs.apply_symlink(pfd, base, attrs.Meta.of(member))
        else:
            self._node(pfd, parts, member)

    def _root_dir(self, member: tarfile.TarInfo) -> None:
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.root.fd)
        try:
            self._dir_meta(fd, (), member)
        finally:
            os.close(fd)

    def _dir(self, pfd: int, parts: tuple[str, ...], member: tarfile.TarInfo,
             exists: bool) -> None:
        if not exists:
            os.mkdir(parts[-1], 0o700, dir_fd=pfd)
        fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=pfd)
        try:
            self._dir_meta(fd, parts, member)
        finally:
            os.close(fd)

    def _dir_meta(self, fd: int, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        meta = attrs.Meta.of(member)
        attrs.apply_fd(fd, attrs.Meta(meta.uid, meta.gid, None, meta.xattrs))
        st = os.fstat(fd)
        self.dir_meta[(st.st_dev, st.st_ino)] = (parts, member.mode, meta.times_ns or (0, 0))

    def _file(self, tar: tarfile.TarFile, pfd: int, base: str, member: tarfile.TarInfo) -> None:
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isreg() members always have data
            raise InvalidArgument(f"tar entry {member.name!r}: no data")
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            while chunk := source.read(_CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            attrs.apply_fd(fd, attrs.Meta.of(member))
        finally:
            os.close(fd)

    def _node(self, pfd: int, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        if member.isfifo():
            kind, device = stat.S_IFIFO, 0
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            device = os.makedev(member.devmajor, member.devminor)
        try:
            os.mknod(parts[-1], kind | 0o600, device, dir_fd=pfd)
        except PermissionError:
            raise FailedPrecondition(
                f"tar entry {_show(parts)}: creating a device node needs root") from None
        fd = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            attrs.apply_fd(fd, attrs.Meta.of(member), via_path=True)
        finally:
            os.close(fd)

    def _hardlink(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        target = clean_name(member.linkname)
        if not target:
            raise InvalidArgument(f"hardlink {_show(parts)} points at the root directory")
        if target == parts:
            return  # a link to itself: nothing to do (and removing it first would lose it)
        with self._parent(target) as tfd:
            tst = lstat_at(tfd, target[-1])
            if tst is not None and self.overlay and _is_whiteout(tst):
                raise InvalidArgument(f"hardlink {_show(parts)} -> {_show(target)}: the target"
                                      " was deleted (whiteout) in this layer")
            if tst is None and not (self.lowers is not None
                                    and self.lowers.copy_up(target, tfd, target[-1])):
                raise InvalidArgument(
                    f"hardlink {_show(parts)} -> {_show(target)}: target not found in the layer")
            if tst is not None and stat.S_ISDIR(tst.st_mode):
                raise InvalidArgument(f"hardlink {_show(parts)} -> {_show(target)}: a directory")
            with self._parent(parts) as pfd:
                if lstat_at(pfd, parts[-1]) is not None:
                    remove_at(pfd, parts[-1])
                # No AT_SYMLINK_FOLLOW: a target that is a symlink is linked as the symlink.
                os.link(target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd,
                        follow_symlinks=False)
        self._mark(parts)

    # --- whiteouts ----------------------------------------------------------------------------

    def _whiteout(self, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        if base == OPAQUE_MARKER:
            self._opaque(parts[:-1])
            return
        name = base[len(WHITEOUT_PREFIX):]
        if name.startswith(WHITEOUT_PREFIX):
            return  # aufs metadata in a subdirectory: meaningless here
        if name in ("", ".", ".."):
            raise InvalidArgument(f"whiteout {_show(parts)} names no entry")
        if self.overlay:
            with self._parent(parts) as pfd:
                remove_at(pfd, name)
                os.mknod(name, stat.S_IFCHR | 0o600, 0, dir_fd=pfd)
            return
        pfd_or_none = self.root.open_dir(parts[:-1])
        if pfd_or_none is None:
            return  # nothing below to delete
        try:
            remove_at(pfd_or_none, name)
        finally:
            os.close(pfd_or_none)

    def _opaque(self, directory: tuple[str, ...]) -> None:
        if self.overlay:
            fd = self.root.make_parents(directory,
                                        self.lowers.make_dir if self.lowers else None)
            try:
                os.setxattr(fd, attrs.OVERLAY_OPAQUE, b"y")
            finally:
                os.close(fd)
            return
        dfd = self.root.open_dir(directory)
        if dfd is None:
            return
        try:
            # Entries this layer already wrote survive: the marker hides the layers *below*.
            keep = frozenset(p[-1] for p in self.written if p[:-1] == directory)
            empty_dir_at(dfd, keep)
        finally:
            os.close(dfd)

    # --- end ----------------------------------------------------------------------------------

    def _reopen_dir(self, parts: tuple[str, ...], key: tuple[int, int]) -> int | None:
        """The directory ``parts`` named when it was created, if it is still that inode.

        The parents resolve inside the root as they did then (a symlinked parent is followed,
        confined); the directory itself is never followed. None if it was removed or replaced.
        """
        if not parts:
            fd = os.open(".", _DIR_FLAGS, dir_fd=self.root.fd)
        else:
            try:
                parent = self.root.open(parts[:-1], os.O_RDONLY | os.O_DIRECTORY)
            except (OSError, InvalidArgument):
                return None
            try:
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
            except OSError:
                return None
            finally:
                os.close(parent)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != key:
            os.close(fd)
            return None
        return fd

    def finish(self) -> None:
        self._drop_cache()
        for key, (parts, mode, times) in self.dir_meta.items():
            fd = self._reopen_dir(parts, key)
            if fd is None:
                continue  # replaced later in the layer by something else: its own metadata stands
            try:
                os.fchmod(fd, stat.S_IMODE(mode))
                os.utime(fd, ns=times)
            finally:
                os.close(fd)


def apply_tar(stream: IO[bytes], root: str, overlay: bool = False,
              lowers: Sequence[str] = ()) -> None:
    """Apply the uncompressed tar ``stream`` to directory ``root`` (see the module docstring).

    Raises InvalidArgument (a hostile or malformed entry), FailedPrecondition (device node
    without root), OSError (the filesystem failed).
    """
    run_applier(Applier(root, overlay, lowers), stream, "layer tar")


def run_applier(applier: Applier, stream: IO[bytes], what: str) -> None:
    """Feed every member of the tar ``stream`` to ``applier``, then finish and close it (also
    on error). Raises InvalidArgument for a malformed tar (``what`` names it)."""
    try:
        try:
            with tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape") as tar:
                for member in tar:
                    applier.entry(tar, member)
        except tarfile.TarError as err:
            raise InvalidArgument(f"malformed {what}: {err}") from None
        applier.finish()
    finally:
        applier.close()


def apply_layer(reader: ReaderAt, mounts: Sequence[Mount],
                on_read: Callable[[int], None] | None = None, sync: bool = True) -> ApplyResult:
    """Decompress the layer blob, apply it to the snapshot behind ``mounts``, hash it.

    ``on_read(compressed_bytes_so_far)`` reports progress. With ``sync`` the files are flushed
    to disk before returning, so a snapshot committed next survives a power loss whole.
    Raises like ``apply_tar``, and NotFound if the snapshot's directory is gone.
    """
    root, overlay, lowers = layer_target(mounts)
    if not os.path.isdir(root):
        raise NotFound(f"snapshot directory {root} does not exist")
    diff: DiffReader = open_layer(reader, on_read)
    apply_tar(diff, root, overlay, lowers)  # type: ignore[arg-type]
    diff.drain()
    if sync:
        syncfs(root)
    return ApplyResult(diff.digest(), diff.size)
