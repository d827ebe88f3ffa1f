"""Device nodes in the container and the device-cgroup rules that go with them, as runc does.

Every container gets runc's default nodes (null, zero, full, random, urandom, tty) unless its
``/dev`` is a bind mount, plus the spec's ``linux.devices``; the cgroup rules are the spec's
``linux.resources.devices`` followed by runc's default allow-list. Nodes are made with mknod
inside the rootfs (directories resolved with :func:`secure_join`, the last component never
followed); this module never creates a node outside the rootfs and never replaces or follows
a file an image already has at a device path.
"""

from __future__ import annotations

import os
import stat

from pydeskd.runtime.errors import SetupFailed
from pydeskd.runtime.securejoin import secure_join
from pydeskd.runtime.spec import Device, DeviceRule, Spec

DEFAULT_DEVICES = (
    Device("c", "/dev/null", 1, 3, 0o666, 0, 0),
    Device("c", "/dev/zero", 1, 5, 0o666, 0, 0),
    Device("c", "/dev/full", 1, 7, 0o666, 0, 0),
    Device("c", "/dev/random", 1, 8, 0o666, 0, 0),
    Device("c", "/dev/urandom", 1, 9, 0o666, 0, 0),
    Device("c", "/dev/tty", 5, 0, 0o666, 0, 0),
)

# runc's AllowedDevices, appended after the spec's own rules (so a leading deny-all keeps them).
DEFAULT_RULES = (
    DeviceRule(True, "c", None, None, "m"),
    DeviceRule(True, "b", None, None, "m"),
    *(DeviceRule(True, d.type, d.major, d.minor, "rwm") for d in DEFAULT_DEVICES),
    DeviceRule(True, "c", 136, None, "rwm"),  # /dev/pts/*
    DeviceRule(True, "c", 5, 2, "rwm"),  # /dev/ptmx
    DeviceRule(True, "c", 10, 200, "rwm"),  # /dev/net/tun
)

# /dev entries that point into /proc or devpts rather than being nodes.
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)


def cgroup_rules(spec: Spec) -> tuple[DeviceRule, ...]:
    return (*spec.linux.resources.devices, *DEFAULT_RULES)


def dev_is_bind_mounted(spec: Spec) -> bool:
    for m in spec.mounts:
        if os.path.normpath(m.destination) == "/dev" and (
                m.type == "bind" or "bind" in m.options or "rbind" in m.options):
            return True
    return False


def devices_to_create(spec: Spec) -> tuple[Device, ...]:
    """runc's defaults (unless /dev is bound from elsewhere) then linux.devices; a listed
    device replaces a default with the same path."""
    listed = {os.path.normpath(d.path) for d in spec.linux.devices}
    defaults = () if dev_is_bind_mounted(spec) else tuple(
        d for d in DEFAULT_DEVICES if d.path not in listed)
    return (*defaults, *spec.linux.devices)


def node_mode(device: Device) -> int:
    kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    mode = device.file_mode if device.file_mode is not None else 0o666
    return kind[device.type] | (mode & 0o7777)


def node_path(rootfs: str, path: str) -> str:
    """The host path for container path ``path``: its directories resolved inside rootfs
    (:func:`secure_join`), its last component NOT followed, so that a symlink an image put
    at a device path (say /dev/null -> /etc/passwd) is never the file acted on."""
    clean = os.path.normpath("/" + path)
    name = os.path.basename(clean)
    if not name:
        raise SetupFailed(f"device {path!r}: the root is not a device path")
    return os.path.join(secure_join(rootfs, os.path.dirname(clean)), name)


def create_device(rootfs: str, device: Device) -> None:
    """mknod the device inside rootfs, then chown and chmod it. As runc, anything already at
    the path (a node, a file, a symlink) is left as it is: never replaced, never followed."""
    path = node_path(rootfs, device.path)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        os.mknod(path, node_mode(device), os.makedev(device.major, device.minor))
    except FileExistsError:
        return
    # mknod applies the umask; chmod makes the mode exactly what the spec says.
    os.chmod(path, node_mode(device) & 0o7777)
    os.chown(path, device.uid or 0, device.gid or 0, follow_symlinks=False)


def create_dev_symlinks(rootfs: str) -> None:
    for target, link in DEV_SYMLINKS:
        path = secure_join(rootfs, link)
        if not os.path.lexists(path):
            os.symlink(target, path)
    if os.path.exists("/proc/kcore"):
        path = secure_join(rootfs, "/dev/core")
        if not os.path.lexists(path):
            os.symlink("/proc/kcore", path)


def setup_ptmx(rootfs: str) -> None:
    """/dev/ptmx -> pts/ptmx, so that the container's devpts instance serves new ptys."""
    path = node_path(rootfs, "/dev/ptmx")
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink("pts/ptmx", path)
