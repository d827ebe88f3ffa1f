"""``docker export``: a tar of a container's whole root filesystem, as its snapshot holds it.

What it is for: ``GET /containers/{id}/export`` streams :func:`export`. The tar is the merged
view of the container's snapshot (image layers plus what the container changed): the rootfs the
daemon mounted for a running container, or a read-only mount made for the call when it is
stopped. Volumes, binds and the /etc files the daemon mounts are *not* included (Docker's
export leaves them out too); entry names are relative (``bin/``, ``etc/passwd``).

What it must never do: follow a symlink of the container's, include a mount source, or leave
the temporary mount behind (it is released when the stream ends or is closed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydeskd.daemon.containers.archive import container_fs
from pydeskd.daemon.containers.archive_tar import tar_stream

if TYPE_CHECKING:
    from pydeskd.daemon.containers.service import ContainerService


def export(svc: ContainerService, ref: str) -> Iterator[bytes]:
    """The tar's chunks. Raises NotFound (no such container) before the first chunk."""
    c = svc.get(ref)
    stack = contextlib.ExitStack()
    fs = stack.enter_context(container_fs(svc, c, read_only=True, with_mounts=False))

    def chunks() -> Iterator[bytes]:
        with stack:
            yield from tar_stream(fs, fs.locate(()), "", follow_mounts=False)

    svc.publish(c, "export")
    return chunks()
