"""Reading a container's cgroup (v1 or v2) for ``top``, ``stats`` and OOM detection.

What it is for: the directories of the cgroup the runtime made from the spec's ``cgroupsPath``,
and one-shot reads of their files in Docker's stats JSON shape. Read-only: this module must
never write to or remove a cgroup (the runtime owns them).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from pydeskd.shim.jsonlog import rfc3339nano

CGROUP_ROOT = Path("/sys/fs/cgroup")


def is_v2(root: Path = CGROUP_ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


def cgroup_dirs(cgroups_path: str, root: Path = CGROUP_ROOT) -> dict[str, Path]:
    """controller -> directory; v2 has one directory under the key ``""``."""
    rel = cgroups_path.strip("/")
    if is_v2(root):
        return {"": root / rel}
    out: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for hierarchy in root.iterdir():
            if hierarchy.is_dir() and not hierarchy.is_symlink():
                out[hierarchy.name] = hierarchy / rel
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _int(path: Path, default: int = 0) -> int:
    text = _read(path).strip()
    if text == "max":
        return default
    try:
        return int(text)
    except ValueError:
        return default


def _kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def pids(cgroups_path: str, root: Path = CGROUP_ROOT) -> list[int]:
    """Every process of the cgroup (and its children), sorted."""
    dirs = cgroup_dirs(cgroups_path, root)
    base = dirs.get("") or dirs.get("pids") or dirs.get("memory") or next(iter(dirs.values()),
                                                                           None)
    found: set[int] = set()
    if base is None or not base.is_dir():
        return []
    for dirpath, _, files in os.walk(base):
        if "cgroup.procs" in files:
            for line in _read(Path(dirpath) / "cgroup.procs").split():
                with contextlib.suppress(ValueError):
                    found.add(int(line))
    return sorted(found)


def oom_killed(cgroups_path: str, root: Path = CGROUP_ROOT) -> bool:
    dirs = cgroup_dirs(cgroups_path, root)
    if "" in dirs:
        return _kv(dirs[""] / "memory.events").get("oom_kill", 0) > 0
    memory = dirs.get("memory")
    if memory is None:
        return False
    return _kv(memory / "memory.oom_control").get("oom_kill", 0) > 0


def _system_cpu_ns() -> int:
    for line in _read(Path("/proc/stat")).splitlines():
        if line.startswith("cpu "):
            ticks = sum(int(x) for x in line.split()[1:8])
            return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return 0


def stats(cid: str, name: str, cgroups_path: str, root: Path = CGROUP_ROOT,
          previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Docker's stats JSON (one sample); ``previous`` fills ``precpu_stats``."""
    dirs = cgroup_dirs(cgroups_path, root)
    online = os.cpu_count() or 1
    cpu: dict[str, Any] = {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                                         "usage_in_usermode": 0},
                           "system_cpu_usage": _system_cpu_ns(), "online_cpus": online,
                           "throttling_data": {"periods": 0, "throttled_periods": 0,
                                               "throttled_time": 0}}
    memory: dict[str, Any] = {}
    pids_stats: dict[str, Any] = {}
    if "" in dirs:
        d = dirs[""]
        cs = _kv(d / "cpu.stat")
        cpu["cpu_usage"] = {"total_usage": cs.get("usage_usec", 0) * 1000,
                            "usage_in_kernelmode": cs.get("system_usec", 0) * 1000,
                            "usage_in_usermode": cs.get("user_usec", 0) * 1000}
        cpu["throttling_data"] = {"periods": cs.get("nr_periods", 0),
                                  "throttled_periods": cs.get("nr_throttled", 0),
                                  "throttled_time": cs.get("throttled_usec", 0) * 1000}
        memory = {"usage": _int(d / "memory.current"), "stats": _kv(d / "memory.stat"),
                  "limit": _int(d / "memory.max", _host_memory())}
        pids_stats = {"current": _int(d / "pids.current")}
        limit = _int(d / "pids.max", 0)
        if limit:
            pids_stats["limit"] = limit
    else:
        acct = dirs.get("cpuacct")
        if acct is not None:
            usage = _int(acct / "cpuacct.usage")
            st = _kv(acct / "cpuacct.stat")
            tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            cpu["cpu_usage"] = {"total_usage": usage,
                                "usage_in_kernelmode": st.get("system", 0) * tick,
                                "usage_in_usermode": st.get("user", 0) * tick}
        mem = dirs.get("memory")
        if mem is not None:
            limit = _int(mem / "memory.limit_in_bytes", _host_memory())
            memory = {"usage": _int(mem / "memory.usage_in_bytes"),
                      "max_usage": _int(mem / "memory.max_usage_in_bytes"),
                      "stats": _kv(mem / "memory.stat"),
                      "limit": min(limit, _host_memory())}
        pd = dirs.get("pids")
        if pd is not None:
            pids_stats = {"current": _int(pd / "pids.current")}
            limit = _int(pd / "pids.max", 0)
            if limit:
                pids_stats["limit"] = limit
    now = time.time_ns()
    prev = previous or {}
    return {
        "read": rfc3339nano(now), "preread": prev.get("read", "0001-01-01T00:00:00Z"),
        "pids_stats": pids_stats, "blkio_stats": {"io_service_bytes_recursive": None},
        "num_procs": 0, "storage_stats": {}, "cpu_stats": cpu,
        "precpu_stats": prev.get("cpu_stats", {"cpu_usage": {"total_usage": 0},
                                               "throttling_data": {}}),
        "memory_stats": memory, "name": name, "id": cid, "networks": {},
    }


def _host_memory() -> int:
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


NET_CLASS = Path("/sys/class/net")
_NET_FIELDS = ("bytes", "packets", "errors", "dropped")


def network_stats(interfaces: dict[str, str], root: Path = NET_CLASS) -> dict[str, Any]:
    """``networks`` of a stats sample: container interface -> counters, read from the host
    end of its veth, with rx and tx swapped (what the host end sends, the container
    receives), as Docker does."""
    out: dict[str, Any] = {}
    for ifname, host_veth in sorted(interfaces.items()):
        stats = root / host_veth / "statistics"
        if not stats.is_dir():
            continue
        entry: dict[str, int] = {}
        for field in _NET_FIELDS:
            entry[f"rx_{field}"] = _int(stats / f"tx_{field}")
            entry[f"tx_{field}"] = _int(stats / f"rx_{field}")
        out[ifname] = entry
    return out

