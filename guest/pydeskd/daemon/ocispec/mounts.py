"""Mount entries of the spec: the caller's resolved mounts, tmpfs, and Docker's merging rules.

:class:`SpecMount` is what the daemon hands the builder for each bind or volume it resolved
(:func:`bind_mount` gives Docker's options for one). Tmpfs mounts come from the HostConfig
itself (``Tmpfs`` and ``Mounts`` of type tmpfs) with Docker's option merging
(:func:`merge_tmpfs_options`). :func:`assemble_mounts` applies moby's withMounts: user mounts
replace defaults at the same destination (a /dev mount drops every /dev/* default), /dev/shm
gets ShmSize (or disappears with ``--ipc none``), a read-only rootfs makes the remaining
defaults read-only, privileged makes /sys writable, and the result is ordered by depth.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.ocispec.defaults import DEFAULT_MOUNTS, WRITABLE_WITH_READONLY_ROOTFS

DEFAULT_PROPAGATION = "rprivate"
_PROPAGATIONS = frozenset(("private", "rprivate", "shared", "rshared", "slave", "rslave",
                           "unbindable", "runbindable"))
# Mount flags by the bit they set/clear: two options on one bit collide (exec vs noexec).
_FLAG_KEYS = {
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid", "dev": "nodev",
    "nodev": "nodev", "exec": "noexec", "noexec": "noexec", "sync": "sync", "async": "sync",
    "dirsync": "dirsync", "remount": "remount", "mand": "mand", "nomand": "mand",
    "atime": "noatime", "noatime": "noatime", "diratime": "nodiratime",
    "nodiratime": "nodiratime", "bind": "bind", "rbind": "rbind", "relatime": "relatime",
    "norelatime": "relatime", "strictatime": "strictatime", "nostrictatime": "strictatime",
}
_TMPFS_DATA = frozenset(("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"))


@dataclass(frozen=True)
class SpecMount:
    """One OCI mount, ready for config.json."""

    source: str
    destination: str
    type: str = "bind"
    options: tuple[str, ...] = ()

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"destination": self.destination, "type": self.type,
                               "source": self.source}
        if self.options:
            out["options"] = list(self.options)
        return out


def bind_mount(source: str, destination: str, *, read_only: bool = False,
               propagation: str = DEFAULT_PROPAGATION, recursive: bool = True) -> SpecMount:
    """A bind as Docker writes it: ``rbind`` (``bind`` if non-recursive), ``ro``, propagation.

    Docker 28 writes ``rro`` where the runtime can do recursive read-only; pydesk-runc cannot
    yet, so this is Docker's own fallback, ``ro``.
    """
    options = ["rbind" if recursive else "bind"]
    if read_only:
        options.append("ro")
    if propagation:
        options.append(propagation)
    return SpecMount(source, destination, "bind", tuple(options))


def merge_tmpfs_options(options: Sequence[str]) -> list[str]:
    """moby's MergeTmpfsOptions: later options win per flag bit / data key, order kept."""
    seen_flags: set[str] = set()
    seen_data: set[str] = set()
    merged: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        key = "propagation" if option in _PROPAGATIONS else _FLAG_KEYS.get(option)
        if key is not None:
            if key not in seen_flags:
                merged.insert(0, option)
                seen_flags.add(key)
            continue
        name, sep, _ = option.partition("=")
        if not sep or name not in _TMPFS_DATA:
            raise InvalidArgument(f'invalid tmpfs option ["{option}"]')
        if name not in seen_data:
            merged.insert(0, option)
            seen_data.add(name)
    return merged


def tmpfs_mount(destination: str, data: str) -> SpecMount:
    """A ``--tmpfs DEST:DATA`` mount: noexec,nosuid,nodev,rprivate then the user's options."""
    options = ["noexec", "nosuid", "nodev", DEFAULT_PROPAGATION]
    if data:
        options += data.split(",")
    return SpecMount("tmpfs", destination, "tmpfs", tuple(merge_tmpfs_options(options)))


def _depth(mount: SpecMount) -> int:
    return posixpath.normpath(mount.destination).count("/")


def assemble_mounts(user_mounts: Iterable[SpecMount], *, shm_size: int, ipc_none: bool,
                    shm_is_user_mount: bool, readonly_rootfs: bool, privileged: bool,
                    writable_cgroups: bool) -> list[SpecMount]:
    """Default mounts + ``user_mounts`` (sorted by depth, stable), as moby's withMounts."""
    users = sorted(user_mounts, key=_depth)
    user_dests = {m.destination for m in users}
    mount_dev = "/dev" in user_dests
    mounts: list[SpecMount] = []
    for dest, kind, source, base_options in DEFAULT_MOUNTS:
        options = base_options
        if dest in user_dests or (mount_dev and dest.startswith("/dev/")):
            continue
        if dest == "/dev/shm":
            if ipc_none or shm_is_user_mount:
                continue
            options = (*options, f"size={shm_size}")
        if readonly_rootfs and dest not in WRITABLE_WITH_READONLY_ROOTFS and "ro" not in options:
            options = (*options, "ro")
        if (privileged and dest == "/sys") or (writable_cgroups and kind == "cgroup"):
            options = tuple(o for o in options if o != "ro")
        mounts.append(SpecMount(source, dest, kind, options))
    return mounts + users
