"""The OCI spec (config.json) of a container and of its execs, from its merged Config.

What it is for: the bundle's config.json at start, and the process object of an exec, built the
same way (env, user, capabilities). The issue's spec builder with Docker's full defaults
(seccomp profile, every mask) is :mod:`pydeskd.daemon.ocispec`; until it is there this module
builds a smaller spec with Docker's capability set, masks and mounts so containers run.

Pure, except :func:`resolve_user`, which reads the container's /etc/passwd and /etc/group.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeskd.containerd.errors import InvalidArgument

from .mounts import Resolved

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
ALL_CAPS = (
    *DEFAULT_CAPS, "CAP_DAC_READ_SEARCH", "CAP_LINUX_IMMUTABLE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_LEASE", "CAP_AUDIT_CONTROL",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_SHM = 64 * 1024 * 1024


def _cap(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def capabilities(cap_add: Sequence[str], cap_drop: Sequence[str],
                 privileged: bool = False) -> list[str]:
    """Docker's TweakCapabilities: ALL in add or drop, then drops win over adds."""
    if privileged:
        return list(ALL_CAPS)
    adds = [_cap(c) for c in cap_add]
    drops = [_cap(c) for c in cap_drop]
    caps: list[str] = [] if "CAP_ALL" in drops else list(DEFAULT_CAPS)
    if "CAP_ALL" in adds:
        caps = list(ALL_CAPS)
    for cap in adds:
        if cap != "CAP_ALL" and cap not in caps:
            if cap not in ALL_CAPS:
                raise InvalidArgument(f"unknown capability: \"{cap}\"")
            caps.append(cap)
    return [c for c in caps if c not in drops or c in adds]


def _lookup(path: Path, key: str, by_name: bool) -> list[str] | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and (fields[0] == key if by_name else fields[2] == key):
            return fields
    return None


def resolve_user(rootfs: Path, user: str) -> dict[str, Any]:
    """``user[:group]`` (names or numbers) -> the OCI user, with supplementary groups from the
    container's /etc/group as Docker. Raises InvalidArgument "unable to find user X"."""
    name, _, group = (user or "0").partition(":")
    passwd = rootfs / "etc" / "passwd"
    entry = _lookup(passwd, name, by_name=not name.isdigit())
    if entry is None and not name.isdigit():
        raise InvalidArgument(f"unable to find user {name}: no matching entries in passwd file")
    uid = int(name) if name.isdigit() else int(entry[2]) if entry else 0
    gid = int(entry[3]) if entry and len(entry) > 3 and entry[3].isdigit() else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            gentry = _lookup(rootfs / "etc" / "group", group, by_name=True)
            if gentry is None:
                raise InvalidArgument(f"unable to find group {group}: no matching entries in "
                                      f"group file")
            gid = int(gentry[2])
    out: dict[str, Any] = {"uid": uid, "gid": gid}
    uname = entry[0] if entry else None
    extra: list[int] = []
    if uname and not group:
        try:
            for line in (rootfs / "etc" / "group").read_text(errors="replace").splitlines():
                fields = line.split(":")
                if len(fields) >= 4 and uname in fields[3].split(",") and fields[2].isdigit():
                    gid_extra = int(fields[2])
                    if gid_extra != gid and gid_extra not in extra:
                        extra.append(gid_extra)
        except OSError:
            pass
    if extra:
        out["additionalGids"] = extra
    return out


def home_of(rootfs: Path, uid: int) -> str:
    entry = _lookup(rootfs / "etc" / "passwd", str(uid), by_name=False)
    return entry[5] if entry and len(entry) > 5 and entry[5] else "/"


def process_env(env: Sequence[str], hostname: str, tty: bool, home: str) -> list[str]:
    """Docker's process env: PATH default, HOSTNAME, TERM with a tty, HOME, then the config's."""
    out = [DEFAULT_PATH] if not any(e.startswith("PATH=") for e in env) else []
    out.append(f"HOSTNAME={hostname}")
    if tty:
        out.append("TERM=xterm")
    out.extend(env)
    if not any(e.startswith("HOME=") for e in out):
        out.append(f"HOME={home}")
    return out


@dataclass(frozen=True)
class BundleInputs:
    cid: str
    config: Mapping[str, Any]        # merged container Config
    host_config: Mapping[str, Any]
    rootfs: Path
    args: Sequence[str]              # Path + Args
    mounts: Sequence[Resolved]
    cgroups_path: str
    hostname_path: str
    hosts_path: str
    resolv_conf_path: str


def process(inputs: BundleInputs, args: Sequence[str], *, env: Sequence[str] = (),
            user: str = "", cwd: str = "", tty: bool = False,
            privileged: bool = False) -> dict[str, Any]:
    """The OCI process of the init (or of an exec, with its own args/env/user/cwd/tty)."""
    config, host = inputs.config, inputs.host_config
    oci_user = resolve_user(inputs.rootfs, user or config.get("User") or "")
    caps = capabilities(host.get("CapAdd") or [], host.get("CapDrop") or [],
                        privileged or bool(host.get("Privileged")))
    hostname = config.get("Hostname") or inputs.cid[:12]
    proc: dict[str, Any] = {
        "terminal": tty,
        "user": oci_user,
        "args": list(args),
        "env": process_env([*(config.get("Env") or []), *env], hostname, tty,
                           home_of(inputs.rootfs, oci_user["uid"])),
        "cwd": posixpath.normpath(cwd or config.get("WorkingDir") or "/"),
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": f"RLIMIT_{str(u['Name']).upper()}", "hard": int(u["Hard"]),
                     "soft": int(u["Soft"])} for u in host.get("Ulimits") or []],
    }
    if "no-new-privileges" in (host.get("SecurityOpt") or []) or \
            "no-new-privileges:true" in (host.get("SecurityOpt") or []):
        proc["noNewPrivileges"] = True
    return proc


def _resources(host: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    memory: dict[str, Any] = {}
    if host.get("Memory"):
        memory["limit"] = int(host["Memory"])
    if host.get("MemorySwap"):
        memory["swap"] = int(host["MemorySwap"])
    elif host.get("Memory"):
        memory["swap"] = 2 * int(host["Memory"])  # Docker's default: swap = memory
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if host.get("CpuShares"):
        cpu["shares"] = int(host["CpuShares"])
    if host.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = int(host["NanoCpus"]) * 100000 // 1_000_000_000
    if cpu:
        out["cpu"] = cpu
    if host.get("PidsLimit"):
        out["pids"] = {"limit": int(host["PidsLimit"])}
    return out


def bundle_spec(inputs: BundleInputs) -> dict[str, Any]:
    config, host = inputs.config, inputs.host_config
    shm = int(host.get("ShmSize") or DEFAULT_SHM)
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]},
    ]
    user_dests = {m.destination for m in inputs.mounts}
    for dest, src in (("/etc/resolv.conf", inputs.resolv_conf_path),
                      ("/etc/hostname", inputs.hostname_path), ("/etc/hosts", inputs.hosts_path)):
        if src and dest not in user_dests:
            mounts.append({"destination": dest, "type": "bind", "source": src,
                           "options": ["rbind", "rprivate"]})
    mounts += [m.oci() for m in inputs.mounts]
    network_mode = host.get("NetworkMode") or "default"
    namespaces = [{"type": "mount"}, {"type": "uts"}, {"type": "pid"}, {"type": "ipc"}]
    if network_mode != "host":
        namespaces.append({"type": "network"})
    privileged = bool(host.get("Privileged"))
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": inputs.cgroups_path,
        "resources": _resources(host),
        "maskedPaths": [] if privileged else list(MASKED_PATHS),
        "readonlyPaths": [] if privileged else list(READONLY_PATHS),
    }
    hostname = config.get("Hostname") or inputs.cid[:12]
    return {
        "ociVersion": "1.0.2",
        "process": process(inputs, inputs.args, tty=bool(config.get("Tty"))),
        "root": {"path": str(inputs.rootfs), "readonly": bool(host.get("ReadonlyRootfs"))},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }


def replace_or_append_env(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: ``extra`` overrides same-named variables in place."""
    out = list(base)
    index = {e.partition("=")[0]: n for n, e in enumerate(out)}
    for item in extra:
        key = item.partition("=")[0]
        if key in index:
            out[index[key]] = item
        else:
            index[key] = len(out)
            out.append(item)
    return out


def exec_process(template: Mapping[str, Any], rootfs: Path, args: Sequence[str], *,
                 env: Sequence[str] = (), user: str = "", cwd: str = "", tty: bool = False,
                 privileged: bool = False) -> dict[str, Any]:
    """An exec's OCI process as moby builds it: the container's own process (from its
    config.json) with the exec's args, env (overriding), user, cwd and terminal; all
    capabilities when privileged."""
    proc = {k: v for k, v in template.items() if k not in ("consoleSize",)}
    proc["args"] = list(args)
    proc["terminal"] = tty
    base_env = [e for e in template.get("env") or [] if not e.startswith("TERM=")]
    if tty:
        base_env.append("TERM=xterm")
    proc["env"] = replace_or_append_env(base_env, env)
    if user:
        proc["user"] = resolve_user(rootfs, user)
    if cwd:
        proc["cwd"] = posixpath.normpath(cwd)
    if privileged:
        caps = list(ALL_CAPS)
        proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
    return proc
