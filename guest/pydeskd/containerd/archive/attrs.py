"""File metadata for layer extraction: ownership, modes, xattrs, times, applied without following.

What it is for: one place that decides which extended attributes a layer may set and applies an
entry's metadata in the order the kernel needs (chown clears setuid/setgid and file capabilities,
so: chown, then xattrs, then chmod; times last).

The xattr rule: ``user.*``, ``trusted.*``, ``security.capability`` (file capabilities, e.g.
``ping``) and POSIX ACLs (``system.posix_acl_*``) are set; ``trusted.overlay.*`` is **dropped**
(a layer must not forge overlayfs metadata such as ``opaque``, ``redirect`` or ``metacopy``), and
every other ``security.*`` (SELinux, SMACK, IMA labels from the machine that built the image) is
dropped too: those are the host's policy, not the image's. Setting an allowed xattr may fail
with ENOTSUP or EPERM (``user.*`` on a device node or a fifo is EPERM even for root): that xattr
is skipped and logged, as moby's ``pkg/archive`` does; any other xattr error is fatal. Without
root, EPERM on chown is ignored too (rootless ``import``); as root a chown failure is an error.

What it must never do: take a path with more than one component, or follow the entry itself.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_XATTR_PREFIX = "SCHILY.xattr."
_ALLOWED_EXACT = frozenset({"security.capability", "system.posix_acl_access",
                            "system.posix_acl_default"})
OVERLAY_OPAQUE = "trusted.overlay.opaque"


def xattr_allowed(name: str) -> bool:
    if name.startswith("trusted.overlay."):
        return False
    return name.startswith(("user.", "trusted.")) or name in _ALLOWED_EXACT


def xattrs_from_pax(pax: Mapping[str, str]) -> dict[str, bytes]:
    """The allowed xattrs of a tar entry (PAX ``SCHILY.xattr.<name>`` records, as GNU tar)."""
    out: dict[str, bytes] = {}
    for key, value in pax.items():
        if key.startswith(_XATTR_PREFIX):
            name = key[len(_XATTR_PREFIX):]
            if xattr_allowed(name):
                # tarfile decodes PAX values with surrogateescape: this gives the bytes back.
                out[name] = value.encode("utf-8", "surrogateescape")
    return out


def _skip_xattr(err: OSError, name: str, fd_or_path: int | str) -> bool:
    """True if a failed setxattr is skipped (and logged) rather than failing the layer.

    As moby's ``pkg/archive``: ENOTSUP (the filesystem keeps no such xattrs) and EPERM (the
    kernel refuses them here: ``user.*`` on a device node or a fifo, even as root; a user
    namespace with restrictions) are skipped; any other error stays fatal.
    """
    if err.errno in (errno.ENOTSUP, errno.EPERM) or _tolerable(err):
        log.warning("xattr %s not set on %s: %s (skipped, as Docker does)", name,
                    fd_or_path, os.strerror(err.errno or 0))
        return True
    return False


def _tolerable(err: OSError) -> bool:
    """Failures a rootless extraction may ignore (it cannot own files or set trusted.*)."""
    return os.geteuid() != 0 and err.errno in (errno.EPERM, errno.EACCES, errno.EINVAL)


def fd_path(fd: int) -> str:
    """The magic link to an opened fd (an ``O_PATH`` fd of a device or fifo, say).

    Syscalls that have no fd variant (chmod of a device node, xattrs of a fifo) go through it:
    it names the inode already opened without following anything in the tree again.
    """
    return f"/proc/self/fd/{fd}"


@dataclass(frozen=True)
class Meta:
    """An entry's metadata. ``mode`` None: leave it; ``times_ns`` (atime, mtime) None: later."""

    uid: int
    gid: int
    mode: int | None = None
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    times_ns: tuple[int, int] | None = None

    @staticmethod
    def of(member: tarfile.TarInfo, with_times: bool = True) -> Meta:
        mtime = int(float(member.mtime) * 1e9)
        atime = mtime
        with contextlib.suppress(ValueError):
            atime = int(float(member.pax_headers.get("atime", "")) * 1e9)
        return Meta(member.uid, member.gid, member.mode, xattrs_from_pax(member.pax_headers),
                    (atime, mtime) if with_times else None)

    @staticmethod
    def of_stat(st: os.stat_result) -> Meta:
        return Meta(st.st_uid, st.st_gid, st.st_mode, {}, (st.st_atime_ns, st.st_mtime_ns))


def apply_fd(fd: int, meta: Meta, via_path: bool = False) -> None:
    """Metadata of an opened entry. ``via_path`` for O_PATH fds (fchown/fchmod refuse those)."""
    uid, gid, mode, xattrs, times_ns = meta.uid, meta.gid, meta.mode, meta.xattrs, meta.times_ns
    path = fd_path(fd)
    try:
        if via_path:
            os.chown(path, uid, gid)
        else:
            os.fchown(fd, uid, gid)
    except OSError as err:
        if not _tolerable(err):
            raise
    for name, value in xattrs.items():
        try:
            os.setxattr(path if via_path else fd, name, value)
        except OSError as err:
            if not _skip_xattr(err, name, path):
                raise
    if mode is not None:
        if via_path:
            os.chmod(path, stat.S_IMODE(mode))
        else:
            os.fchmod(fd, stat.S_IMODE(mode))
    if times_ns is not None:
        os.utime(path if via_path else fd, ns=times_ns)


def apply_symlink(dir_fd: int, name: str, meta: Meta) -> None:
    """Metadata of a symlink ``name`` in ``dir_fd``: lchown, lsetxattr, lutimes; no mode."""
    uid, gid, xattrs, times_ns = meta.uid, meta.gid, meta.xattrs, meta.times_ns
    try:
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as err:
        if not _tolerable(err):
            raise
    for key, value in xattrs.items():
        if key.startswith("user."):
            continue  # the kernel refuses user.* on symlinks
        try:
            os.setxattr(f"{fd_path(dir_fd)}/{name}", key, value, follow_symlinks=False)
        except OSError as err:
            if not _skip_xattr(err, key, name):
                raise
    if times_ns is not None:
        os.utime(name, ns=times_ns, dir_fd=dir_fd, follow_symlinks=False)


def copy_xattrs(src_fd_path: str, dst_fd_path: str, follow: bool = True) -> None:
    """Copy the allowed xattrs of one inode to another (overlay copy-up)."""
    try:
        names = os.listxattr(src_fd_path, follow_symlinks=follow)
    except OSError as err:
        if err.errno == errno.ENOTSUP:
            return
        raise
    for name in names:
        if xattr_allowed(name):
            value = os.getxattr(src_fd_path, name, follow_symlinks=follow)
            try:
                os.setxattr(dst_fd_path, name, value, follow_symlinks=follow)
            except OSError as err:
                if not _skip_xattr(err, name, dst_fd_path):
                    raise
