"""The read-only lower layers of an overlay snapshot, as the applier needs them.

What it is for: the applier writes a layer straight into an overlay upperdir (no mount), so the
few things that depend on what is *below* are looked up here, in the lowerdirs, nearest first:

- a directory the layer's entries need but that only a lower layer has is created in the upper
  with the lower one's owner, mode, xattrs and times (else ``/tmp`` would turn 0755 in the merged
  view the moment a layer adds a file to it);
- a hardlink whose target is in a lower layer needs the target in the upper first (a hardlink
  cannot cross layers): it is *copied up* (contents and metadata), then linked.

The lookup follows overlayfs' rules closely enough for these two uses: the nearest layer that has
the path wins; a whiteout (char device 0/0) there means "deleted"; an opaque directory or a
whiteout on an ancestor stops the search. Symlinks in ancestors are resolved inside each lower on
its own (as containerd does), not across layers.

What it must never do: write to a lower layer, or read outside one (every open is confined with
``RESOLVE_IN_ROOT`` and never follows the final component).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence

from pydeskd.containerd.archive import attrs
from pydeskd.containerd.archive.confine import Root, lstat_at
from pydeskd.containerd.errors import InvalidArgument


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, attrs.OVERLAY_OPAQUE) == b"y"
    except OSError:
        return False


class Lowers:
    """The lowerdirs of one overlay snapshot, nearest first, opened for confined lookups."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._roots = [Root(p) for p in paths]

    def close(self) -> None:
        for root in self._roots:
            root.close()

    def _blocked(self, root: Root, parts: tuple[str, ...]) -> bool:
        """True if an ancestor of ``parts`` in this layer hides the layers below it.

        An ancestor that is not a directory here (a whiteout, a file, a symlink) or is an opaque
        directory ends the search; a missing ancestor lets it go on.
        """
        for i in range(1, len(parts)):
            prefix = parts[:i]
            parent = root.open_dir(prefix[:-1])
            if parent is None:
                return False
            try:
                st = lstat_at(parent, prefix[-1])
                if st is None:
                    return False
                if not stat.S_ISDIR(st.st_mode):
                    return True
                fd = os.open(prefix[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, dir_fd=parent)
            finally:
                os.close(parent)
            try:
                if _is_opaque(fd):
                    return True
            finally:
                os.close(fd)
        return False

    def find(self, parts: tuple[str, ...]) -> tuple[Root, int] | None:
        """The nearest lower layer holding ``parts`` and its parent fd, or None if none does.

        The caller closes the returned fd.
        """
        for root in self._roots:
            parent = root.open_dir(parts[:-1])
            if parent is not None:
                st = lstat_at(parent, parts[-1])
                if st is not None:
                    if is_whiteout(st):
                        os.close(parent)
                        return None
                    return root, parent
                os.close(parent)
            if self._blocked(root, parts):
                return None
        return None

    def make_dir(self, parts: tuple[str, ...], parent_fd: int, name: str) -> None:
        """Create directory ``name`` in the upper's ``parent_fd``, like the lower one if any."""
        found = self.find(parts)
        if found is None:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            return
        _, lower_parent = found
        try:
            src = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=lower_parent)
        finally:
            os.close(lower_parent)
        try:
            st = os.fstat(src)
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            if not stat.S_ISDIR(st.st_mode):
                # A file or a symlink below: the new directory hides it in the merged view
                # (the symlink is not followed, as containerd resolves parents in the upper).
                return
            dst = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=parent_fd)
            try:
                attrs.copy_xattrs(attrs.fd_path(src), attrs.fd_path(dst))
                attrs.apply_fd(dst, attrs.Meta.of_stat(st))
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def copy_up(self, parts: tuple[str, ...], parent_fd: int, name: str) -> bool:
        """Copy the lower layers' ``parts`` to ``name`` in the upper's ``parent_fd``.

        Returns False if no lower layer has it. Directories are refused (a hardlink target).
        """
        found = self.find(parts)
        if found is None:
            return False
        _, lower_parent = found
        try:
            src = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=lower_parent)
        finally:
            os.close(lower_parent)
        try:
            st = os.fstat(src)
            meta = attrs.Meta.of_stat(st)
            if stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(f"hardlink target /{'/'.join(parts)} is a directory")
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(attrs.fd_path(src))
                os.symlink(target, name, dir_fd=parent_fd)
                attrs.apply_symlink(parent_fd, name, meta)
                return True
            if stat.S_ISREG(st.st_mode):
                with open(attrs.fd_path(src), "rb") as reader:
                    dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, 0o600, dir_fd=parent_fd)
                    with open(dst, "wb", closefd=True) as writer:
                        shutil.copyfileobj(reader, writer, 1 << 20)
                        writer.flush()
                        attrs.apply_fd(dst, attrs.Meta(st.st_uid, st.st_gid))
                        attrs.copy_xattrs(attrs.fd_path(src), attrs.fd_path(dst))
                        attrs.apply_fd(dst, meta)
                return True
            os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=parent_fd)
            dst = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            try:
                attrs.apply_fd(dst, meta, via_path=True)
            finally:
                os.close(dst)
            return True
        finally:
            os.close(src)
