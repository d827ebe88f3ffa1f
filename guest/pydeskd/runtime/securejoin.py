"""Resolving a container path inside the root filesystem, never outside it.

:func:`secure_join` follows symlinks one component at a time as if ``root`` were ``/``: an
absolute link restarts at ``root``, ``..`` stops at ``root``. A mount destination such as
``/etc -> /etc`` or ``/x -> ../../../host`` therefore lands inside the rootfs. Missing
components are kept as they are (the caller creates them). It must never return a path
outside ``root``.
"""

from __future__ import annotations

import os
import stat

MAX_SYMLINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """The host path for container path ``unsafe`` under ``root``; raises OSError(ELOOP)."""
    root = os.path.abspath(root)
    pending = [p for p in unsafe.split("/") if p]
    pending.reverse()  # a stack: the next component is at the end
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            info = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if not stat.S_ISLNK(info.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(40, f"too many levels of symbolic links resolving {unsafe!r}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(reversed([p for p in target.split("/") if p]))
    return os.path.join(root, *resolved)
