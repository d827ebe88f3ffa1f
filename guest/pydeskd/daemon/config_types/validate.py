"""Docker's checks of a create request, with its messages (each failure is an HTTP 400).

The order follows dockerd: the checks of ``runconfig.validateCreateRequest`` (network mode,
isolation, CPU shares), then ``verifyContainerSettings`` (Config, HostConfig, platform
resources). Host facts (CPU count, whether a bind source exists, the kernel's last
capability) are parameters, so every rule is unit-tested; this module never reads the host
by itself except through those defaults.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types.config import Config
from pydeskd.daemon.config_types.host_config import HostConfig
from pydeskd.runtime.capabilities import CAPABILITIES, last_cap

LINUX_MIN_MEMORY = 6 * 1024 * 1024
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$")


@dataclass(frozen=True)
class SecurityOptions:
    """HostConfig.SecurityOpt parsed as dockerd's parseSecurityOpt.

    ``seccomp_profile``: "" = the default profile, "unconfined", or a profile's JSON text
    (the CLI reads ``seccomp=FILE`` and sends the content). AppArmor and SELinux labels are
    accepted and kept, but pydesk applies neither.
    """

    no_new_privileges: bool = False
    seccomp_profile: str = ""
    apparmor_profile: str = ""
    writable_cgroups: bool | None = None
    label_opts: tuple[str, ...] = ()


def parse_security_opt(opts: Iterable[str] | None) -> SecurityOptions:
    """Raises InvalidArgument ``invalid --security-opt 1/2: "..."`` as dockerd does."""
    nnp, seccomp, apparmor = False, "", ""
    writable: bool | None = None
    labels: list[str] = []
    for opt in opts or ():
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "writable-cgroups":
            writable = True
            continue
        if opt == "disable":
            labels.append("disable")
            continue
        sep = "=" if "=" in opt else ":" if ":" in opt else ""
        if not sep:
            raise InvalidArgument(f'invalid --security-opt 1: "{opt}"')
        key, _, value = opt.partition(sep)
        if key == "label":
            labels.append(value)
        elif key == "apparmor":
            apparmor = value
        elif key == "seccomp":
            seccomp = value
        elif key in ("no-new-privileges", "writable-cgroups"):
            parsed = _parse_go_bool(value)
            if parsed is None:
                raise InvalidArgument(f'invalid --security-opt 2: "{opt}"')
            if key == "no-new-privileges":
                nnp = parsed
            else:
                writable = parsed
        else:
            raise InvalidArgument(f'invalid --security-opt 2: "{opt}"')
    return SecurityOptions(nnp, seccomp, apparmor, writable, tuple(labels))


def normalize_capabilities(caps: Iterable[str] | None, last: int | None = None) -> list[str]:
    """moby's NormalizeLegacyCapabilities: upper case, ``CAP_`` prefixed, ``ALL`` kept."""
    top = last_cap() if last is None else last
    out: list[str] = []
    for cap in caps or ():
        name = cap.upper()
        if name == "ALL":
            out.append(name)
            continue
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if name not in CAPABILITIES:
            raise InvalidArgument(f'unknown capability: "{name}"')
        if CAPABILITIES[name] > top:
            raise InvalidArgument("capability not supported by your kernel or not available "
                                  f'in the current environment: "{name}"')
        out.append(name)
    return out


def validate_create(config: Config, host: HostConfig, *, cpu_count: int | None = None,
                    bind_source_exists: Callable[[str], bool] | None = os.path.exists,
                    runtimes: Iterable[str] | None = None,
                    last: int | None = None) -> tuple[Config, list[str]]:
    """All of Docker's create-time checks. Returns the Config as stored (WorkingDir cleaned)
    and the warnings Docker would return; raises InvalidArgument with Docker's message."""
    _validate_request(config, host)
    config = config.validate()
    warnings = _validate_host_config(host, bind_source_exists, last)
    parse_security_opt(host.security_opt)  # dockerd parses them at create
    warnings += _validate_platform(host, cpu_count or os.cpu_count() or 1, runtimes)
    return config, warnings


def _validate_request(config: Config, host: HostConfig) -> None:
    mode = host.network_mode
    if mode == "container" or mode.startswith("container:"):
        if not mode.partition(":")[2]:
            raise InvalidArgument(
                "invalid network mode: invalid container format container:<name|id>")
        for present, what in (
                (config.hostname, "hostname and the network mode"),
                (host.links, "container type network can't be used with links. "
                             "This would result in undefined behavior"),
                (host.dns, "dns and the network mode"),
                (host.extra_hosts, "custom host-to-IP mapping and the network mode"),
                (host.port_bindings or host.publish_all_ports,
                 "port publishing and the container type network mode"),
                (config.exposed_ports, "port exposing and the container type network mode")):
            if present:
                raise InvalidArgument(f"conflicting options: {what}")
    if host.uts_mode == "host" and config.hostname:
        raise InvalidArgument("conflicting options: hostname and the UTS mode")
    if mode == "host" and host.links:
        raise InvalidArgument("conflicting options: host type networking can't be used with "
                              "links. This would result in undefined behavior")
    if host.isolation.lower() not in ("", "default"):
        raise InvalidArgument(f"invalid isolation ({host.isolation}): linux only supports "
                              "'default'")
    if host.cpu_shares < 0:
        raise InvalidArgument(f"invalid CPU shares ({host.cpu_shares}): value must be a "
                              "positive integer")


def _validate_host_config(host: HostConfig, bind_source_exists: Callable[[str], bool] | None,
                          last: int | None) -> list[str]:
    if host.auto_remove and not host.restart_policy.is_none():
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    for mount in host.mounts or ():
        mount.validate(bind_source_exists)
    for extra in host.extra_hosts or ():
        name, sep, ip = extra.partition(":")
        if not sep or not name:
            raise InvalidArgument(f'bad format for add-host: "{extra}"')
        if ip != "host-gateway":
            try:
                ipaddress.ip_address(ip.strip("[]") if ip.startswith("[") else ip)
            except ValueError:
                raise InvalidArgument(f'invalid IP address in add-host: "{ip}"') from None
    for port, bindings in (host.port_bindings or {}).items():
        m = _PORT.match(port)
        if m is None or int(m.group(1)) == 0 or int(m.group(1)) > 65535:
            raise InvalidArgument(f'invalid port specification: "{port}"')
        for binding in bindings:
            if binding.host_port and not _valid_port_range(binding.host_port):
                raise InvalidArgument(f'invalid port specification: "{binding.host_port}"')
    host.restart_policy.validate()
    for field, caps in (("CapAdd", host.cap_add), ("CapDrop", host.cap_drop)):
        try:
            normalize_capabilities(caps, last)
        except InvalidArgument as e:
            raise InvalidArgument(f"invalid {field}: {e}") from None
    if host.isolation.lower() not in ("", "default"):
        raise InvalidArgument(f"invalid isolation '{host.isolation}' on linux")
    return []


def _validate_platform(host: HostConfig, cpu_count: int,
                       runtimes: Iterable[str] | None) -> list[str]:
    warnings: list[str] = []
    if host.memory != 0 and host.memory < LINUX_MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if host.memory > 0 and host.memory_swap > 0 and host.memory_swap < host.memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage")
    if host.memory == 0 and host.memory_swap > 0:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap "
                              "limit, see usage")
    if host.memory_swappiness is not None and host.memory_swappiness != -1 \
            and not 0 <= host.memory_swappiness <= 100:
        raise InvalidArgument(f"Invalid value: {host.memory_swappiness}, valid memory "
                              "swappiness range is 0-100")
    if host.memory_reservation > 0 and host.memory_reservation < LINUX_MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if host.memory > 0 and host.memory_reservation > 0 \
            and host.memory < host.memory_reservation:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation "
                              "limit, see usage")
    if host.oom_kill_disable and host.memory == 0:
        warnings.append("OOM killer is disabled for the container, but no memory limit is "
                        "set, this can result in the system running out of resources.")
    if host.nano_cpus > 0 and host.cpu_period > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if host.nano_cpus > 0 and host.cpu_quota > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if host.nano_cpus != 0 and not 0 <= host.nano_cpus <= cpu_count * 10**9:
        raise InvalidArgument(f"range of CPUs is from 0.01 to {cpu_count}.00, as there are "
                              f"only {cpu_count} CPUs available")
    if host.cpu_period != 0 and not 1000 <= host.cpu_period <= 1_000_000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                              "than 1s (i.e. 1000000)")
    if 0 < host.cpu_quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    for value, what in ((host.cpuset_cpus, "cpus"), (host.cpuset_mems, "mems")):
        if value and not _valid_cpuset(value):
            raise InvalidArgument(f"Invalid value {value} for cpuset {what}: invalid format: "
                                  f"{value}")
    if host.ipc_mode and not _valid_ipc(host.ipc_mode):
        raise InvalidArgument(f"invalid IPC mode: {host.ipc_mode}")
    if host.pid_mode and host.pid_mode != "host" and not (
            host.pid_mode.startswith("container:") and host.pid_mode[10:]):
        raise InvalidArgument(f"invalid PID mode: {host.pid_mode}")
    if host.shm_size < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    if host.uts_mode not in ("", "host"):
        raise InvalidArgument(f"invalid UTS mode: {host.uts_mode}")
    if not -1000 <= host.oom_score_adj <= 1000:
        raise InvalidArgument(f"Invalid value {host.oom_score_adj}, range for oom score adj "
                              "is [-1000, 1000]")
    if host.network_mode == "host" and host.port_bindings:
        warnings.append("Published ports are discarded when using host network mode")
    if host.userns_mode not in ("", "host"):
        raise InvalidArgument(f"invalid USER mode: {host.userns_mode}")
    known = tuple(runtimes) if runtimes is not None else None
    if host.runtime and known is not None and host.runtime not in known:
        raise InvalidArgument(f"unknown or invalid runtime name: {host.runtime}")
    for dest in host.tmpfs or {}:
        if not dest.startswith("/"):
            raise InvalidArgument(f"invalid mount path: '{dest}' mount path must be absolute")
        if os.path.normpath(dest) == "/":
            raise InvalidArgument("invalid specification: destination can't be '/'")
    if host.cgroupns_mode not in ("", "private", "host"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {host.cgroupns_mode}")
    return warnings


def _valid_ipc(mode: str) -> bool:
    return mode in ("none", "host", "private", "shareable") or mode.startswith("container:") \
        or mode == "container"


def _valid_port_range(text: str) -> bool:
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        return False
    return int(low) <= 65535 and (not sep or int(low) <= int(high) <= 65535)


def _valid_cpuset(text: str) -> bool:
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        if not low.isdigit() or (sep and (not high.isdigit() or int(high) < int(low))):
            return False
    return True


def _parse_go_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None
