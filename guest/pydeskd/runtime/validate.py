"""Checks on a parsed spec that need more than one field, run by :func:`parse_spec`.

Today: ``linux.sysctl`` against the namespaces, as runc's validator does. A sysctl is written
from inside the container, so a key whose namespace the container shares with the host would
change the host's kernel setting: only keys owned by a namespace the container does not share
with the host are accepted. Runs on every create: must stay fast (no file reads except one
stat for a joined namespace's path) and must never write anything.
"""

from __future__ import annotations

import os

from pydeskd.runtime.errors import SpecError

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from pydeskd.runtime.spec import Spec

# runc's list: the System V IPC sysctls, owned by the ipc namespace (plus fs.mqueue.*).
IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})
_PROC_NS = {"network": "net", "mount": "mnt"}  # spec names -> /proc/self/ns names


def validate(spec: Spec) -> None:
    """Raises :class:`SpecError` for a combination of fields the runtime must refuse."""
    if spec.linux.sysctl:
        check_sysctls(spec)


def _separate(spec: Spec, kind: str) -> bool:
    """Whether the container's ``kind`` namespace is not the host's (our own)."""
    ns = spec.linux.namespace(kind)
    if ns is None:
        return False
    if not ns.path:
        return True
    try:
        joined = os.stat(ns.path)
        ours = os.stat(f"/proc/self/ns/{_PROC_NS.get(kind, kind)}")
    except OSError:
        return True  # an unusable path fails create later, when it is opened
    return (joined.st_dev, joined.st_ino) != (ours.st_dev, ours.st_ino)


def check_sysctls(spec: Spec) -> None:
    for key, _value in spec.linux.sysctl:
        parts = key.split(".")
        if "/" in key or any(p in ("", "..") for p in parts):
            raise SpecError(f"linux.sysctl: {key!r} is not a sysctl name (a.b.c)")
        if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if _separate(spec, "ipc"):
                continue
            raise SpecError(f"linux.sysctl: {key!r} is not allowed in the host's ipc namespace")
        if key.startswith("net."):
            if _separate(spec, "network"):
                continue
            raise SpecError(
                f"linux.sysctl: {key!r} is not allowed in the host's network namespace")
        if key == "kernel.hostname":
            raise SpecError("linux.sysctl: kernel.hostname is not allowed; use hostname")
        if key == "kernel.domainname" and _separate(spec, "uts"):
            continue
        raise SpecError(f"linux.sysctl: {key!r} is not in a separate kernel namespace")
