"""Docker's defaults for a container's OCI spec (moby daemon/pkg/oci, Docker 28).

Every table here is what ``docker run`` gives a container that asked for nothing: the 14
capabilities, the mounts of /proc, /dev, /dev/pts, /sys, /sys/fs/cgroup, /dev/mqueue and
/dev/shm, the device-cgroup allow-list, the namespaces, the default PATH. Data only.
"""

from __future__ import annotations

from typing import Any

from pydeskd.daemon.config_types import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
from pydeskd.daemon.ocispec.host import HostView

OCI_VERSION = "1.2.0"
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH_IN_CONTAINER = "/sbin/docker-init"
DEFAULT_CGROUP_PARENT = "/pydesk"

# moby oci/caps/defaults.go, in its order (the spec lists them so).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# (destination, type, source, options); /dev/shm gets size=<ShmSize> appended.
DEFAULT_MOUNTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    ("/dev/pts", "devpts", "devpts",
     ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    ("/sys/fs/cgroup", "cgroup", "cgroup", ("ro", "nosuid", "noexec", "nodev")),
    ("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777")),
)
# Default mounts a read-only rootfs leaves writable (moby withMounts).
WRITABLE_WITH_READONLY_ROOTFS = frozenset(("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"))

# Device cgroup: deny all, then allow zero, null, urandom, random, tty and console (the
# runtime adds its own allow-list after these); /dev/fuse (10:229) is denied explicitly.
_ALLOWED_NODES = ((1, 5), (1, 3), (1, 9), (1, 8), (5, 0), (5, 1))


def default_device_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    rules += [{"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
              for major, minor in _ALLOWED_NODES]
    rules.append({"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"})
    return rules


DEFAULT_NAMESPACES = ("mount", "network", "uts", "pid", "ipc")


def masked_paths(host: HostView) -> tuple[str, ...]:
    """Docker's masked paths, with the per-CPU thermal_throttle directories the host has."""
    throttles = []
    for cpu in range(host.cpu_count()):
        path = f"/sys/devices/system/cpu/cpu{cpu}/thermal_throttle"
        if host.path_exists(path):
            throttles.append(path)
    return (*DEFAULT_MASKED_PATHS, *throttles)


READONLY_PATHS = DEFAULT_READONLY_PATHS
