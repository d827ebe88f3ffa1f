"""The ``linux`` half of the spec: namespaces, resources, devices, as Docker writes them.

Namespace paths for "container:<id>" modes are the caller's (it knows the other container's
pid); host devices come through the HostView seam.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types import HostConfig
from pydeskd.daemon.ocispec.defaults import DEFAULT_NAMESPACES, default_device_rules
from pydeskd.daemon.ocispec.host import DeviceNode, HostView

_CGROUP_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")
CFS_PERIOD_US = 100_000


def namespaces(host: HostConfig, network_disabled: bool,
               paths: Mapping[str, str]) -> list[dict[str, str]]:
    """Docker's namespaces: mount, network, uts, pid, ipc (+cgroup when private); "host"
    modes drop one; ``paths`` (kind -> /proc/<pid>/ns/<kind>) joins an existing one."""
    out: list[dict[str, str]] = [{"type": kind} for kind in DEFAULT_NAMESPACES]

    def drop(kind: str) -> None:
        out[:] = [ns for ns in out if ns["type"] != kind]

    def join(kind: str, what: str) -> None:
        path = paths.get(kind)
        if not path:
            raise InvalidArgument(f"{what}: the namespace path of the other container is "
                                  "unknown")
        for ns in out:
            if ns["type"] == kind:
                ns["path"] = path

    if not network_disabled:
        mode = host.network_mode
        if mode == "host":
            drop("network")
        elif mode.startswith("container:"):
            join("network", f"network mode {mode}")
        elif paths.get("network"):
            join("network", "network")
    if host.ipc_mode == "host":
        drop("ipc")
    elif host.ipc_mode.startswith("container:"):
        join("ipc", f"IPC mode {host.ipc_mode}")
    if host.pid_mode == "host":
        drop("pid")
    elif host.pid_mode.startswith("container:"):
        join("pid", f"PID mode {host.pid_mode}")
    if host.uts_mode == "host":
        drop("uts")
    if host.cgroupns_mode == "private":
        out.append({"type": "cgroup"})
    return out


def memory(host: HostConfig) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if host.memory > 0:
        out["limit"] = host.memory
    if host.memory_reservation > 0:
        out["reservation"] = host.memory_reservation
    if host.memory_swap > 0:
        out["swap"] = host.memory_swap
    if host.memory_swappiness is not None and host.memory_swappiness >= 0:
        out["swappiness"] = host.memory_swappiness
    if host.oom_kill_disable is not None:
        out["disableOOMKiller"] = host.oom_kill_disable
    return out or None


def cpu(host: HostConfig) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if host.cpu_shares:
        if host.cpu_shares < 0:
            raise InvalidArgument(f"invalid CPU shares ({host.cpu_shares}): value must be a "
                                  "positive integer")
        out["shares"] = host.cpu_shares
    if host.nano_cpus > 0:
        out["quota"] = host.nano_cpus * CFS_PERIOD_US // 10**9
        out["period"] = CFS_PERIOD_US
    if host.cpu_period:
        out["period"] = host.cpu_period
    if host.cpu_quota:
        out["quota"] = host.cpu_quota
    if host.cpuset_cpus:
        out["cpus"] = host.cpuset_cpus
    if host.cpuset_mems:
        out["mems"] = host.cpuset_mems
    return out or None


def pids(host: HostConfig) -> dict[str, int] | None:
    if host.pids_limit is None:
        return None
    return {"limit": host.pids_limit if host.pids_limit > 0 else -1}


def devices(host: HostConfig, view: HostView) -> tuple[list[DeviceNode], list[dict[str, Any]]]:
    """(``linux.devices``, ``linux.resources.devices``), as moby's WithDevices."""
    if host.privileged:
        nodes = view.devices_under("/dev")
        for mapping in host.devices or ():
            if mapping.path_on_host == mapping.path_in_container:
                continue  # the host's node is there already
            nodes += devices_from_path(view, mapping.path_on_host, mapping.path_in_container,
                                       "rwm")[0]
        return nodes, [{"allow": True, "access": "rwm"}]
    nodes = []
    rules = default_device_rules()
    for mapping in host.devices or ():
        found, allowed = devices_from_path(view, mapping.path_on_host,
                                           mapping.path_in_container or mapping.path_on_host,
                                           mapping.cgroup_permissions or "rwm")
        nodes += found
        rules += allowed
    for rule in host.device_cgroup_rules or ():
        m = _CGROUP_RULE.match(rule)
        if m is None:
            raise InvalidArgument(f"invalid device cgroup rule format: '{rule}'")
        entry: dict[str, Any] = {"allow": True, "type": m.group(1)}
        for key, value in (("major", m.group(2)), ("minor", m.group(3))):
            if value != "*":
                entry[key] = int(value)
        entry["access"] = m.group(4)
        rules.append(entry)
    return nodes, rules


def devices_from_path(view: HostView, on_host: str, in_container: str,
                      permissions: str) -> tuple[list[DeviceNode], list[dict[str, Any]]]:
    """``--device HOST[:CONTAINER[:PERMS]]``: one node, or every node under a directory."""
    try:
        node = view.device(on_host)
        if node is not None:
            found = [_moved(node, in_container)]
        else:
            below = view.devices_under(on_host)
            if not below:
                raise InvalidArgument(f'error gathering device information while adding '
                                      f'custom device "{on_host}": not a device node')
            prefix = on_host.rstrip("/")
            found = [_moved(n, in_container.rstrip("/") + n.path[len(prefix):]) for n in below]
    except OSError as e:
        raise InvalidArgument(f'error gathering device information while adding custom device '
                              f'"{on_host}": {e.strerror or e}') from None
    rules = [{"allow": True, "type": n.type, "major": n.major, "minor": n.minor,
              "access": permissions} for n in found]
    return found, rules


def _moved(node: DeviceNode, path: str) -> DeviceNode:
    return DeviceNode(node.type, path, node.major, node.minor, node.file_mode, node.uid,
                      node.gid)
