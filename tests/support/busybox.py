"""OCI bundles with a busybox-static root filesystem, for tests, benchmarks and the quickstart.

`make_bundle(dir)` writes `dir/rootfs` (busybox and its applet links, the usual directories)
and `dir/config.json` from `base_config()`, which mirrors what `runc spec` generates, but with
no terminal, a writable root and a cgroup path per bundle. Tests change the config as data
and call `write_config` again.

    python -m tests.support.busybox DIR [ARGS...]   makes a bundle that runs ARGS
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
ROOTFS_DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "home", "var", "run", "usr")

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_BASE: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"],
        "cwd": "/",
        "capabilities": {k: list(DEFAULT_CAPS) for k in
                         ("bounding", "effective", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": False},
    "hostname": "pydesk-test",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                       {"type": "mount"}],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    },
}


def base_config(args: list[str] | None = None, cgroups_path: str | None = None) -> dict[str, Any]:
    """A fresh copy of the base config (safe to mutate)."""
    config = copy.deepcopy(_BASE)
    if args is not None:
        config["process"]["args"] = list(args)
    if cgroups_path is not None:
        config["linux"]["cgroupsPath"] = cgroups_path
    return config


def make_rootfs(rootfs: Path) -> None:
    """A busybox-static root filesystem: /bin/busybox plus a link per applet."""
    if not BUSYBOX.exists():
        raise RuntimeError("busybox-static is not installed (scripts/setup installs it)")
    for d in ROOTFS_DIRS:
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        link = rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")


def copy_rootfs(template: Path, rootfs: Path) -> None:
    """Copies a rootfs made by `make_rootfs` (links stay links): much faster than making one."""
    shutil.copytree(template, rootfs, symlinks=True)


def write_config(bundle: Path, config: dict[str, Any]) -> None:
    (bundle / "config.json").write_text(json.dumps(config, indent=2))


def make_bundle(bundle: Path, args: list[str] | None = None,
                cgroups_path: str | None = None) -> dict[str, Any]:
    """Makes `bundle/rootfs` and `bundle/config.json`; returns the config written."""
    bundle.mkdir(parents=True, exist_ok=True)
    make_rootfs(bundle / "rootfs")
    config = base_config(args, cgroups_path)
    write_config(bundle, config)
    return config


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m tests.support.busybox DIR [ARGS...]")
    target = Path(sys.argv[1])
    make_bundle(target, sys.argv[2:] or None, cgroups_path=f"/pydesk/{target.name}-{os.getpid()}")
    print(target)
