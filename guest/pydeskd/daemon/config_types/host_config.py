"""The container ``HostConfig`` of the Engine API (the host-dependent half of a create).

Decoded with Docker's JSON rules, rendered for ``inspect`` with Docker's null/empty
conventions (a list the client sent as null stays null, one it sent empty stays ``[]``), and
completed with the daemon's defaults by :meth:`HostConfig.with_defaults` as dockerd's
adaptContainerSettings does. Semantic checks are in ``validate.py``; nothing here touches
the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types._decode import Fields
from pydeskd.daemon.config_types.mounts import Mount

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
# moby daemon/pkg/oci/defaults.go (Docker 28): what a non-privileged container cannot see or
# change. Docker also masks /sys/devices/system/cpu/cpuN/thermal_throttle where the host has
# them; that needs a look at the host, so ocispec.defaults.masked_paths() adds those.
DEFAULT_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)


@dataclass(frozen=True)
class LogConfig:
    type: str = ""
    config: Mapping[str, str] | None = None

    def to_api(self) -> dict[str, Any]:
        return {"Type": self.type, "Config": dict(self.config or {})}


@dataclass(frozen=True)
class RestartPolicy:
    name: str = ""
    maximum_retry_count: int = 0

    @staticmethod
    def parse(text: str) -> RestartPolicy:
        """The CLI form ``no|always|unless-stopped|on-failure[:N]``; raises InvalidArgument."""
        name, sep, count = text.partition(":")
        if sep and (not count.lstrip("-").isdigit()):
            raise InvalidArgument(f"invalid restart policy format: maximum retry count must be "
                                  f"an integer: {count}")
        policy = RestartPolicy(name, int(count) if sep else 0)
        policy.validate()
        return policy

    def is_none(self) -> bool:
        return self.name in ("", "no")

    def validate(self) -> None:
        """moby's ValidateRestartPolicy, with its messages."""
        if self.name in ("always", "unless-stopped", "no"):
            if self.maximum_retry_count != 0:
                msg = ("invalid restart policy: maximum retry count can only be used with "
                       "'on-failure'")
                if self.maximum_retry_count < 0:
                    msg += " and cannot be negative"
                raise InvalidArgument(msg)
        elif self.name == "on-failure":
            if self.maximum_retry_count < 0:
                raise InvalidArgument(
                    "invalid restart policy: maximum retry count cannot be negative")
        elif self.name != "":
            raise InvalidArgument(
                f"invalid restart policy: unknown policy '{self.name}'; use one of 'no', "
                "'always', 'on-failure', or 'unless-stopped'")

    def to_api(self) -> dict[str, Any]:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}


@dataclass(frozen=True)
class PortBinding:
    host_ip: str = ""
    host_port: str = ""


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class DeviceMapping:
    path_on_host: str
    path_in_container: str = ""
    cgroup_permissions: str = "rwm"


@dataclass(frozen=True)
class HostConfig:
    """Docker's ``container.HostConfig`` (the fields pydesk supports, plus what inspect needs)."""

    binds: tuple[str, ...] | None = None
    container_id_file: str = ""
    log_config: LogConfig = LogConfig()
    network_mode: str = ""
    port_bindings: Mapping[str, tuple[PortBinding, ...]] | None = None
    restart_policy: RestartPolicy = RestartPolicy()
    auto_remove: bool = False
    volumes_from: tuple[str, ...] | None = None
    console_size: tuple[int, int] = (0, 0)
    cap_add: tuple[str, ...] | None = None
    cap_drop: tuple[str, ...] | None = None
    cgroupns_mode: str = ""
    dns: tuple[str, ...] | None = None
    dns_options: tuple[str, ...] | None = None
    dns_search: tuple[str, ...] | None = None
    extra_hosts: tuple[str, ...] | None = None
    group_add: tuple[str, ...] | None = None
    ipc_mode: str = ""
    links: tuple[str, ...] | None = None
    oom_score_adj: int = 0
    pid_mode: str = ""
    privileged: bool = False
    publish_all_ports: bool = False
    readonly_rootfs: bool = False
    security_opt: tuple[str, ...] | None = None
    tmpfs: Mapping[str, str] | None = None
    uts_mode: str = ""
    userns_mode: str = ""
    shm_size: int = 0
    sysctls: Mapping[str, str] | None = None
    runtime: str = ""
    isolation: str = ""
    cpu_shares: int = 0
    memory: int = 0
    nano_cpus: int = 0
    cgroup_parent: str = ""
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    devices: tuple[DeviceMapping, ...] | None = None
    device_cgroup_rules: tuple[str, ...] | None = None
    memory_reservation: int = 0
    memory_swap: int = 0
    memory_swappiness: int | None = None
    oom_kill_disable: bool | None = None
    pids_limit: int | None = None
    ulimits: tuple[Ulimit, ...] | None = None
    mounts: tuple[Mount, ...] | None = None
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    init: bool | None = None

    @staticmethod
    def from_api(obj: Mapping[str, Any] | None, struct: str = "HostConfig",
                 path: str = "HostConfig.") -> HostConfig:
        """Decode a HostConfig object (None/absent = all defaults). Raises InvalidArgument."""
        if obj is None:
            return HostConfig()
        if not isinstance(obj, Mapping):
            raise Fields({}, "CreateRequest", "").error("HostConfig", obj, "container.HostConfig")
        f = Fields(obj, struct, path)
        log = f.obj("LogConfig", "container.LogConfig")
        policy = f.obj("RestartPolicy", "container.RestartPolicy")
        return HostConfig(
            binds=f.str_list("Binds"), container_id_file=f.text("ContainerIDFile"),
            log_config=LogConfig() if log is None else LogConfig(log.text("Type"),
                                                                 log.str_map("Config")),
            network_mode=f.text("NetworkMode"), port_bindings=_port_bindings(f),
            restart_policy=RestartPolicy() if policy is None else RestartPolicy(
                policy.text("Name"), policy.integer("MaximumRetryCount", "int")),
            auto_remove=f.flag("AutoRemove"), volumes_from=f.str_list("VolumesFrom"),
            console_size=_console_size(f),
            cap_add=f.str_slice("CapAdd"), cap_drop=f.str_slice("CapDrop"),
            cgroupns_mode=f.text("CgroupnsMode"), dns=f.str_list("Dns"),
            dns_options=f.str_list("DnsOptions"), dns_search=f.str_list("DnsSearch"),
            extra_hosts=f.str_list("ExtraHosts"), group_add=f.str_list("GroupAdd"),
            ipc_mode=f.text("IpcMode"), links=f.str_list("Links"),
            oom_score_adj=f.integer("OomScoreAdj", "int"), pid_mode=f.text("PidMode"),
            privileged=f.flag("Privileged"), publish_all_ports=f.flag("PublishAllPorts"),
            readonly_rootfs=f.flag("ReadonlyRootfs"), security_opt=f.str_list("SecurityOpt"),
            tmpfs=f.str_map("Tmpfs"), uts_mode=f.text("UTSMode"),
            userns_mode=f.text("UsernsMode"), shm_size=f.integer("ShmSize"),
            sysctls=f.str_map("Sysctls"), runtime=f.text("Runtime"),
            isolation=f.text("Isolation"), cpu_shares=f.integer("CpuShares"),
            memory=f.integer("Memory"), nano_cpus=f.integer("NanoCpus"),
            cgroup_parent=f.text("CgroupParent"), cpu_period=f.integer("CpuPeriod"),
            cpu_quota=f.integer("CpuQuota"), cpuset_cpus=f.text("CpusetCpus"),
            cpuset_mems=f.text("CpusetMems"), devices=_devices(f),
            device_cgroup_rules=f.str_list("DeviceCgroupRules"),
            memory_reservation=f.integer("MemoryReservation"), memory_swap=f.integer("MemorySwap"),
            memory_swappiness=f.opt_integer("MemorySwappiness"),
            oom_kill_disable=f.opt_flag("OomKillDisable"),
            pids_limit=f.opt_integer("PidsLimit"), ulimits=_ulimits(f),
            mounts=_mounts(f), masked_paths=f.str_list("MaskedPaths"),
            readonly_paths=f.str_list("ReadonlyPaths"), init=f.opt_flag("Init"))

    def with_defaults(self, *, default_runtime: str = "runc",
                      log_driver: str = "json-file", shm_size: int = DEFAULT_SHM_SIZE,
                      cgroupns_mode: str = "private",
                      masked_paths: tuple[str, ...] = DEFAULT_MASKED_PATHS,
                      readonly_paths: tuple[str, ...] = DEFAULT_READONLY_PATHS) -> HostConfig:
        """What dockerd stores at create (decodeCreateRequest + adaptContainerSettings):
        NetworkMode "bridge", MemorySwap 2x Memory, ShmSize, IpcMode "private", CgroupnsMode
        "private" (Docker's default on cgroup v2; pass "host" to mimic a v1 host), Runtime,
        log driver, RestartPolicy "no", OomKillDisable false, and the default
        masked/read-only path lists (empty when privileged)."""
        changes: dict[str, Any] = {}
        if not self.network_mode:
            changes["network_mode"] = "bridge"
        if self.port_bindings is None:
            changes["port_bindings"] = {}
        if self.memory > 0 and self.memory_swap == 0:
            changes["memory_swap"] = self.memory * 2
        if self.shm_size == 0:
            changes["shm_size"] = shm_size
        if not self.ipc_mode:
            changes["ipc_mode"] = "private"
        if not self.cgroupns_mode:
            changes["cgroupns_mode"] = cgroupns_mode
        if not self.runtime:
            changes["runtime"] = default_runtime
        if not self.log_config.type:
            changes["log_config"] = LogConfig(log_driver, self.log_config.config or {})
        if not self.restart_policy.name:
            changes["restart_policy"] = RestartPolicy("no", self.restart_policy.maximum_retry_count)
        if self.oom_kill_disable is None:
            changes["oom_kill_disable"] = False
        if self.masked_paths is None:
            changes["masked_paths"] = () if self.privileged else masked_paths
        if self.readonly_paths is None:
            changes["readonly_paths"] = () if self.privileged else readonly_paths
        return replace(self, **changes) if changes else self

    def to_api(self) -> dict[str, Any]:
        """The HostConfig as inspect shows it; every key Docker 28 returns, in its order."""
        out: dict[str, Any] = {
            "Binds": _list(self.binds), "ContainerIDFile": self.container_id_file,
            "LogConfig": self.log_config.to_api(), "NetworkMode": self.network_mode,
            "PortBindings": None if self.port_bindings is None else {
                port: [{"HostIp": b.host_ip, "HostPort": b.host_port} for b in bindings]
                for port, bindings in self.port_bindings.items()},
            "RestartPolicy": self.restart_policy.to_api(), "AutoRemove": self.auto_remove,
            "VolumeDriver": "", "VolumesFrom": _list(self.volumes_from),
            "ConsoleSize": list(self.console_size),
            "CapAdd": _list(self.cap_add), "CapDrop": _list(self.cap_drop),
            "CgroupnsMode": self.cgroupns_mode, "Dns": _list(self.dns),
            "DnsOptions": _list(self.dns_options), "DnsSearch": _list(self.dns_search),
            "ExtraHosts": _list(self.extra_hosts), "GroupAdd": _list(self.group_add),
            "IpcMode": self.ipc_mode, "Cgroup": "", "Links": _list(self.links),
            "OomScoreAdj": self.oom_score_adj, "PidMode": self.pid_mode,
            "Privileged": self.privileged, "PublishAllPorts": self.publish_all_ports,
            "ReadonlyRootfs": self.readonly_rootfs, "SecurityOpt": _list(self.security_opt),
        }
        if self.tmpfs:
            out["Tmpfs"] = dict(self.tmpfs)
        out |= {"UTSMode": self.uts_mode, "UsernsMode": self.userns_mode,
                "ShmSize": self.shm_size}
        if self.sysctls:
            out["Sysctls"] = dict(self.sysctls)
        if self.runtime:
            out["Runtime"] = self.runtime
        out |= {
            "Isolation": self.isolation, "CpuShares": self.cpu_shares, "Memory": self.memory,
            "NanoCpus": self.nano_cpus, "CgroupParent": self.cgroup_parent, "BlkioWeight": 0,
            "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
            "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [],
            "CpuPeriod": self.cpu_period, "CpuQuota": self.cpu_quota,
            "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
            "CpusetCpus": self.cpuset_cpus, "CpusetMems": self.cpuset_mems,
            "Devices": None if self.devices is None else [
                {"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container,
                 "CgroupPermissions": d.cgroup_permissions} for d in self.devices],
            "DeviceCgroupRules": _list(self.device_cgroup_rules), "DeviceRequests": None,
            "MemoryReservation": self.memory_reservation, "MemorySwap": self.memory_swap,
            "MemorySwappiness": self.memory_swappiness, "OomKillDisable": self.oom_kill_disable,
            "PidsLimit": self.pids_limit,
            "Ulimits": None if self.ulimits is None else [
                {"Name": u.name, "Hard": u.hard, "Soft": u.soft} for u in self.ulimits],
            "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        }
        if self.mounts:
            out["Mounts"] = [m.to_api() for m in self.mounts]
        out["MaskedPaths"] = _list(self.masked_paths)
        out["ReadonlyPaths"] = _list(self.readonly_paths)
        if self.init is not None:
            out["Init"] = self.init
        return out


def _list(value: tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else list(value)


def _port_bindings(f: Fields) -> dict[str, tuple[PortBinding, ...]] | None:
    raw = f.raw("PortBindings")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise f.error("PortBindings", raw, "network.PortMap")
    out: dict[str, tuple[PortBinding, ...]] = {}
    for port, bindings in raw.items():
        items = Fields({"PortBindings": bindings}, f.struct, f.path).obj_list(
            "PortBindings", "network.PortBinding") or []
        out[port] = tuple(PortBinding(b.text("HostIp"), b.text("HostPort")) for b in items)
    return out


def _console_size(f: Fields) -> tuple[int, int]:
    raw = f.raw("ConsoleSize")
    if raw is None:
        return (0, 0)
    if not isinstance(raw, list) or len(raw) != 2 or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in raw):
        raise f.error("ConsoleSize", raw, "[2]uint")
    return (raw[0], raw[1])


def _devices(f: Fields) -> tuple[DeviceMapping, ...] | None:
    items = f.obj_list("Devices", "container.DeviceMapping")
    if items is None:
        return None
    return tuple(DeviceMapping(d.text("PathOnHost"), d.text("PathInContainer"),
                               d.text("CgroupPermissions")) for d in items)


def _ulimits(f: Fields) -> tuple[Ulimit, ...] | None:
    items = f.obj_list("Ulimits", "units.Ulimit")
    if items is None:
        return None
    return tuple(Ulimit(u.text("Name"), u.integer("Soft"), u.integer("Hard")) for u in items)


def _mounts(f: Fields) -> tuple[Mount, ...] | None:
    items = f.obj_list("Mounts", "mount.Mount")
    return None if items is None else tuple(Mount.from_fields(m) for m in items)
