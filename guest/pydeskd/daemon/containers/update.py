"""``docker update``: a container's resources and restart policy, changed in place.

What it is for: ``POST /containers/{id}/update`` calls :func:`update`. The request is read into
an :class:`UpdateRequest` (only the fields the client set; 0 or null means "leave as is", as
dockerd reads it) and checked with dockerd's rules and messages; the new values are merged into
the record's HostConfig and saved (inspect shows them, the next start's spec uses them); the
restart policy replaces the live one; and, when the container is running, the cgroup files of
its cgroup are written (:func:`cgroup_writes` is the pure plan, v1 and v2, with the same
conversions as the runtime: cpu.shares -> cpu.weight, memory+swap -> memory.swap.max, NanoCpus
-> CFS quota over a 100ms period). A write the kernel refuses is an error naming file and value.

What it must never do: write outside the container's own cgroup directories, or save a record
the kernel refused (the record is saved only after the writes succeed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.containers import cgroupfs
from pydeskd.daemon.containers.errors import Conflict
from pydeskd.daemon.containers.restart import RestartPolicy
from pydeskd.runtime.cgroups.v2 import cpu_weight

if TYPE_CHECKING:
    from pydeskd.daemon.containers.service import ContainerService

MIN_MEMORY = 6 * 1024 * 1024
NANO_PERIOD = 100_000  # µs: the CFS period dockerd uses for NanoCpus
_INT_FIELDS = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares",
               "CpuPeriod", "CpuQuota")
_STR_FIELDS = ("CpusetCpus", "CpusetMems")


@dataclass(frozen=True)
class UpdateRequest:
    """The fields of an update body that change something (the others are absent)."""

    resources: Mapping[str, Any]
    restart_policy: Mapping[str, Any] | None = None

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> UpdateRequest:
        """Raises InvalidArgument for a field of the wrong type."""
        out: dict[str, Any] = {}
        for key in _INT_FIELDS:
            value = body.get(key)
            if value in (None, 0):
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(f"invalid {key}: {value!r}")
            out[key] = value
        for key in _STR_FIELDS:
            value = body.get(key)
            if value:
                out[key] = str(value)
        pids = body.get("PidsLimit")
        if pids is not None:
            if not isinstance(pids, int) or isinstance(pids, bool):
                raise InvalidArgument(f"invalid PidsLimit: {pids!r}")
            out["PidsLimit"] = pids if pids > 0 else 0  # <= 0: unlimited, stored as 0
        policy = body.get("RestartPolicy")
        if isinstance(policy, Mapping) and policy.get("Name"):
            return cls(out, dict(policy))
        return cls(out)


def merged(host_config: Mapping[str, Any], req: UpdateRequest) -> dict[str, Any]:
    """The HostConfig after the update, checked with dockerd's rules and messages.
    Raises InvalidArgument."""
    old, new = dict(host_config), dict(req.resources)
    result = {**old, **new}
    memory = int(result.get("Memory") or 0)
    swap = int(result.get("MemorySwap") or 0)
    if "Memory" in new and memory < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if "Memory" in new and "MemorySwap" not in new and int(old.get("MemorySwap") or 0) > 0 \
            and memory > int(old["MemorySwap"]):
        raise InvalidArgument("Memory limit should be smaller than already set memoryswap "
                              "limit, update the memoryswap at the same time")
    if swap > 0 and memory and swap < memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage for details")
    if swap > 0 and not memory:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap "
                              "limit, see usage.")
    reservation = int(result.get("MemoryReservation") or 0)
    if memory and reservation and memory < reservation:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation "
                              "limit, see usage")
    if "NanoCpus" in new and (old.get("CpuPeriod") or old.get("CpuQuota")):
        raise InvalidArgument("Conflicting options: Nano CPUs cannot be updated as CPU Period "
                              "has already been set")
    if ("CpuPeriod" in new or "CpuQuota" in new) and old.get("NanoCpus"):
        raise InvalidArgument("Conflicting options: CPU Quota or CPU Period cannot be updated "
                              "as NanoCPUs has already been set")
    if req.restart_policy is not None:
        RestartPolicy.from_api(req.restart_policy)  # validates
        result["RestartPolicy"] = dict(req.restart_policy)
    return result


def _v2_swap(memory: int, swap: int) -> str:
    if swap < 0:
        return "max"
    return str(max(swap - memory, 0))


def cgroup_writes(host: Mapping[str, Any], req: UpdateRequest, v2: bool,
                  current_limit: int | None = None) -> list[tuple[str, str, str]]:
    """(controller, file, value) to write for the updated fields, in a safe order; the
    controller is "" on v2. ``host`` is the merged HostConfig; ``current_limit`` the v1
    ``memory.limit_in_bytes`` now (it decides the order of the memory writes)."""
    new = req.resources
    memory = int(host.get("Memory") or 0)
    swap = int(host.get("MemorySwap") or 0)
    out: list[tuple[str, str, str]] = []
    if v2:
        if "Memory" in new:
            out.append(("", "memory.max", str(memory)))
        if "MemorySwap" in new or ("Memory" in new and swap):
            out.append(("", "memory.swap.max", _v2_swap(memory, swap)))
        if "MemoryReservation" in new:
            out.append(("", "memory.low", str(new["MemoryReservation"])))
        if "CpuShares" in new:
            out.append(("", "cpu.weight", str(cpu_weight(int(new["CpuShares"])))))
        if "NanoCpus" in new:
            quota = int(new["NanoCpus"]) * NANO_PERIOD // 1_000_000_000
            out.append(("", "cpu.max", f"{quota} {NANO_PERIOD}"))
        elif "CpuQuota" in new or "CpuPeriod" in new:
            quota = int(host.get("CpuQuota") or 0)
            period = int(host.get("CpuPeriod") or NANO_PERIOD)
            out.append(("", "cpu.max", f"{quota if quota > 0 else 'max'} {period}"))
        if "CpusetCpus" in new:
            out.append(("", "cpuset.cpus", str(new["CpusetCpus"])))
        if "CpusetMems" in new:
            out.append(("", "cpuset.mems", str(new["CpusetMems"])))
        if "PidsLimit" in new:
            out.append(("", "pids.max", str(new["PidsLimit"] or "max")))
        return out
    if "Memory" in new or "MemorySwap" in new:
        limit = ("memory", "memory.limit_in_bytes", str(memory))
        memsw = ("memory", "memory.memsw.limit_in_bytes", str(swap if swap else -1))
        # memsw must stay >= the limit at every step: raise memsw first only when it grows
        # past the limit in force now (as runc orders them).
        if "MemorySwap" in new:
            grows = swap < 0 or (current_limit is not None and current_limit < swap)
            out += [memsw, limit] if grows else [limit, memsw]
        else:
            out.append(limit)
    if "MemoryReservation" in new:
        out.append(("memory", "memory.soft_limit_in_bytes", str(new["MemoryReservation"])))
    if "CpuShares" in new:
        out.append(("cpu", "cpu.shares", str(new["CpuShares"])))
    if "NanoCpus" in new:
        quota = int(new["NanoCpus"]) * NANO_PERIOD // 1_000_000_000
        out += [("cpu", "cpu.cfs_period_us", str(NANO_PERIOD)),
                ("cpu", "cpu.cfs_quota_us", str(quota))]
    else:
        if "CpuPeriod" in new:
            out.append(("cpu", "cpu.cfs_period_us", str(new["CpuPeriod"])))
        if "CpuQuota" in new:
            out.append(("cpu", "cpu.cfs_quota_us", str(new["CpuQuota"])))
    if "CpusetCpus" in new:
        out.append(("cpuset", "cpuset.cpus", str(new["CpusetCpus"])))
    if "CpusetMems" in new:
        out.append(("cpuset", "cpuset.mems", str(new["CpusetMems"])))
    if "PidsLimit" in new:
        out.append(("pids", "pids.max", str(new["PidsLimit"] or "max")))
    return out


def controller_dir(dirs: Mapping[str, Path], controller: str) -> Path | None:
    """The directory of ``controller`` among ``cgroupfs.cgroup_dirs``' hierarchies (v1 names
    them ``cpu,cpuacct``; v2 has one under "")."""
    if "" in dirs:
        return dirs[""]
    for name, path in dirs.items():
        if controller in name.split(","):
            return path
    return None


def _current_limit(dirs: Mapping[str, Path]) -> int | None:
    directory = controller_dir(dirs, "memory")
    try:
        return int((directory / "memory.limit_in_bytes").read_text()) if directory else None
    except (OSError, ValueError):
        return None


def write_cgroup(dirs: Mapping[str, Path], writes: Sequence[tuple[str, str, str]]) -> None:
    """The seam: writes each file. Raises InvalidArgument naming the file the kernel refused
    (or a controller that is not there)."""
    for controller, name, value in writes:
        directory = controller_dir(dirs, controller)
        if directory is None or not directory.is_dir():
            raise InvalidArgument(f"cannot update container: no {controller or 'cgroup'} "
                                  f"controller for it")
        path = directory / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as err:
            raise InvalidArgument(f"Cannot update container: writing {value!r} to {path}: "
                                  f"{err.strerror}") from None


def update(svc: ContainerService, ref: str, body: Mapping[str, Any]) -> list[str]:
    """``docker update``; the warnings (none). Raises NotFound, InvalidArgument, Conflict."""
    req = UpdateRequest.from_api(body)
    c = svc.get(ref)
    with svc.condition(c.id):
        if c.state.removal_in_progress or c.state.dead:
            raise Conflict(f"Cannot update container {c.id}: container is marked for removal "
                           f"and cannot be \"update\"")
        if req.restart_policy is not None and c.host_config.get("AutoRemove") \
                and req.restart_policy.get("Name") not in ("", "no"):
            raise InvalidArgument("Restart policy cannot be updated because AutoRemove is "
                                  "enabled for the container")
        host = merged(c.host_config, req)
        if c.state.is_running and req.resources:
            path = svc.cgroups_path(c)
            dirs = cgroupfs.cgroup_dirs(path)
            v2 = cgroupfs.is_v2()
            write_cgroup(dirs, cgroup_writes(host, req, v2, None if v2 else
                                             _current_limit(dirs)))
        c.host_config = host
        if req.restart_policy is not None:
            svc.live(c).restart.policy = RestartPolicy.from_api(req.restart_policy)
        svc.store.save(c)
    svc.publish(c, "update")
    return []
