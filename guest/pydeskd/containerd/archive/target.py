"""Where a layer is written, and flushing it: the mounts of an ACTIVE snapshot, ``syncfs(2)``.

What it is for: ``apply_layer`` takes the mounts the snapshotter returned; ``layer_target`` reads
them into a directory to write (a bind's source, an overlay's upperdir) and the lowerdirs
below it, and refuses mounts a layer cannot go to. ``syncfs`` makes what was written durable
before the snapshot is committed.

What it must never do: accept a read-only mount, or several, as a layer's target.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.snapshots import Mount


def layer_target(mounts: Sequence[Mount]) -> tuple[str, bool, list[str]]:
    """Where to write a layer for the mounts of an ACTIVE snapshot: (dir, overlay?, lowerdirs).

    Raises InvalidArgument for mounts a layer cannot be applied to (read-only, several, other).
    """
    if len(mounts) != 1:
        raise InvalidArgument(f"cannot apply a layer to {len(mounts)} mounts")
    mount = mounts[0]
    if "ro" in mount.options:
        raise InvalidArgument("cannot apply a layer to a read-only mount")
    if mount.type == "bind":
        return mount.source, False, []
    if mount.type == "overlay":
        upper, lowers = "", []
        for option in mount.options:
            key, _, value = option.partition("=")
            if key == "upperdir":
                upper = value
            elif key == "lowerdir":
                lowers = value.split(":")
        if not upper:
            raise InvalidArgument("cannot apply a layer to an overlay without upperdir")
        return upper, True, lowers
    raise InvalidArgument(f"cannot apply a layer to a {mount.type!r} mount")


def syncfs(path: str) -> None:
    """Flush the filesystem holding ``path`` (``syncfs(2)``): what was written is on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({path!r}): {os.strerror(err)}")
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
