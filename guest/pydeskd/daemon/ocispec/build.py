"""``build_spec``: a container's Config + HostConfig + image config -> OCI config.json.

The result is what dockerd (through containerd) hands runc for the same request, by moby's
createSpec: Docker's defaults (see defaults.py) with every option applied in moby's order
(common options, cgroups, resources, sysctls, devices, rlimits, namespaces, capabilities,
seccomp, mounts, OOM score, user). Pure except for the HostView seam (device nodes, sysctls,
kernel) and, when the caller has not resolved the user, reading the rootfs's /etc/passwd and
/etc/group (confined to the rootfs). It never mounts, creates or starts anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types import (
    Config,
    HostConfig,
    Ulimit,
    entrypoint_and_args,
    merge_image_config,
    parse_security_opt,
    tmpfs_mount_options,
)
from pydeskd.daemon.ocispec import linux, process
from pydeskd.daemon.ocispec.defaults import (
    DEFAULT_CGROUP_PARENT,
    INIT_PATH_IN_CONTAINER,
    OCI_VERSION,
    READONLY_PATHS,
    masked_paths,
)
from pydeskd.daemon.ocispec.host import HostView, RealHost
from pydeskd.daemon.ocispec.mounts import SpecMount, assemble_mounts, bind_mount, tmpfs_mount
from pydeskd.daemon.ocispec.seccomp_default import default_profile, load_profile, resolve_profile
from pydeskd.daemon.ocispec.user import ExecUser, resolve_user


@dataclass(frozen=True)
class SpecInputs:
    """Everything the spec depends on that is not in the two configs.

    ``mounts``: the binds and volumes the daemon resolved (tmpfs ones come from the
    HostConfig). ``namespace_paths``: kind ("network", "ipc", "pid") -> an existing
    namespace to join (``container:<id>`` modes, or a netns the daemon prepared); a kind
    not given and not in host mode gets a new namespace. ``shm_path``: a host directory to
    bind at /dev/shm (``--ipc shareable`` / ``container:``); ``--ipc host`` binds /dev/shm
    itself. ``user``: resolved by the daemon, or None to resolve ``Config.User`` from the
    rootfs here. ``init_path``: the init binary bound at /sbin/docker-init for ``--init``.
    """

    container_id: str
    config: Config
    host_config: HostConfig
    rootfs: str
    image_config: Mapping[str, Any] | None = None
    mounts: tuple[SpecMount, ...] = ()
    hosts_path: str | None = None
    hostname_path: str | None = None
    resolv_conf_path: str | None = None
    cgroup_parent: str = DEFAULT_CGROUP_PARENT
    namespace_paths: Mapping[str, str] = field(default_factory=dict)
    shm_path: str | None = None
    user: ExecUser | None = None
    init_path: str | None = None
    daemon_init: bool = False
    default_ulimits: tuple[Ulimit, ...] = ()


def build_spec(inp: SpecInputs, host: HostView | None = None) -> dict[str, Any]:
    """The JSON-ready OCI runtime config. Raises InvalidArgument for a request Docker
    would refuse at start (unknown user or group, bad device, bad seccomp profile...)."""
    view = host if host is not None else RealHost()
    config = merge_image_config(inp.config, inp.image_config)
    hc = inp.host_config
    security = parse_security_opt(hc.security_opt)
    last = view.last_cap()
    hostname = config.hostname or inp.container_id[:12]
    path, args = entrypoint_and_args(config)
    argv = [path, *args]
    extra_mounts: list[SpecMount] = []
    pid_private = hc.pid_mode != "host" and not hc.pid_mode.startswith("container:")
    if pid_private and (hc.init if hc.init is not None else inp.daemon_init):
        if not inp.init_path:
            raise InvalidArgument("--init: no init binary is configured")
        argv = [INIT_PATH_IN_CONTAINER, "--", *argv]
        extra_mounts.append(SpecMount(inp.init_path, INIT_PATH_IN_CONTAINER, "bind",
                                      ("bind", "ro")))
    user = inp.user or resolve_user(inp.rootfs, config.user, hc.group_add or ())
    caps = process.capabilities(hc, last, view.bounding_set())

    proc: dict[str, Any] = {}
    if config.tty:
        proc["terminal"] = True
        if any(hc.console_size):
            proc["consoleSize"] = {"height": hc.console_size[0], "width": hc.console_size[1]}
    proc |= {
        "user": {"uid": user.uid, "gid": user.gid,
                 "additionalGids": list(user.additional_gids)},
        "args": argv, "env": process.container_env(config, hostname),
        "cwd": config.working_dir or "/",
        "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
    }
    limits = process.rlimits(hc.ulimits, inp.default_ulimits)
    if limits:
        proc["rlimits"] = limits
    if security.no_new_privileges:
        proc["noNewPrivileges"] = True
    proc["oomScoreAdj"] = hc.oom_score_adj

    root: dict[str, Any] = {"path": inp.rootfs}
    if hc.readonly_rootfs:
        root["readonly"] = True

    spec: dict[str, Any] = {"ociVersion": OCI_VERSION, "process": proc, "root": root}
    if hc.uts_mode != "host":
        spec["hostname"] = hostname
    spec["mounts"] = [m.to_oci() for m in _mounts(inp, config, hc, extra_mounts,
                                                  security.writable_cgroups)]
    spec["linux"] = _linux(inp, config, hc, view, caps=caps,
                           seccomp_profile=security.seccomp_profile)
    return spec


def _mounts(inp: SpecInputs, config: Config, hc: HostConfig, extra: list[SpecMount],
            writable_cgroups: bool | None) -> list[SpecMount]:
    tmpfs = [tmpfs_mount(dest, data) for dest, data in sorted((hc.tmpfs or {}).items())]
    tmpfs += [tmpfs_mount(m.target, ",".join(tmpfs_mount_options(m.tmpfs_options, m.read_only)))
              for m in hc.mounts or () if m.type == "tmpfs"]
    tmpfs_dests = {m.destination for m in tmpfs}
    users = [m for m in inp.mounts if m.destination not in tmpfs_dests]
    taken = {m.destination for m in users} | tmpfs_dests
    writable = not hc.readonly_rootfs
    for dest, source in (("/etc/resolv.conf", inp.resolv_conf_path),
                         ("/etc/hostname", inp.hostname_path),
                         ("/etc/hosts", inp.hosts_path)):
        if source and dest not in taken:
            users.append(bind_mount(source, dest, read_only=not writable))
    shm_is_user_mount = False
    if hc.ipc_mode == "host" or inp.shm_path:
        if "/dev/shm" not in taken:
            users.append(bind_mount(inp.shm_path or "/dev/shm", "/dev/shm"))
        shm_is_user_mount = True
    return assemble_mounts(
        [*users, *tmpfs, *extra], shm_size=hc.shm_size or 64 * 1024 * 1024,
        ipc_none=hc.ipc_mode == "none", shm_is_user_mount=shm_is_user_mount,
        readonly_rootfs=hc.readonly_rootfs, privileged=hc.privileged,
        writable_cgroups=writable_cgroups if writable_cgroups is not None else hc.privileged)


def _linux(inp: SpecInputs, config: Config, hc: HostConfig, view: HostView, *,
           caps: list[str], seccomp_profile: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sysctl: dict[str, str] = {}
    if config.domainname:
        sysctl["kernel.domainname"] = config.domainname
    if hc.network_mode != "host" and not hc.network_mode.startswith("container:"):
        if view.sysctl_exists("net.ipv4.ping_group_range"):
            sysctl["net.ipv4.ping_group_range"] = "0 2147483647"
        if view.sysctl_exists("net.ipv4.ip_unprivileged_port_start"):
            sysctl["net.ipv4.ip_unprivileged_port_start"] = "0"
    sysctl |= dict(hc.sysctls or {})
    if sysctl:
        out["sysctl"] = sysctl
    nodes, rules = linux.devices(hc, view)
    resources: dict[str, Any] = {"devices": rules}
    for key, value in (("memory", linux.memory(hc)), ("cpu", linux.cpu(hc)),
                       ("pids", linux.pids(hc))):
        if value is not None:
            resources[key] = value
    resources["blockIO"] = {}
    out["resources"] = resources
    parent = hc.cgroup_parent or inp.cgroup_parent
    out["cgroupsPath"] = parent.rstrip("/") + "/" + inp.container_id
    out["namespaces"] = linux.namespaces(hc, config.network_disabled, inp.namespace_paths)
    if nodes:
        out["devices"] = [n.to_oci() for n in nodes]
    seccomp = _seccomp(hc, caps, seccomp_profile, view)
    if seccomp is not None:
        out["seccomp"] = seccomp
    masked = hc.masked_paths if hc.masked_paths is not None else (
        () if hc.privileged else masked_paths(view))
    readonly = hc.readonly_paths if hc.readonly_paths is not None else (
        () if hc.privileged else READONLY_PATHS)
    if masked:
        out["maskedPaths"] = list(masked)
    if readonly:
        out["readonlyPaths"] = list(readonly)
    return out


def _seccomp(hc: HostConfig, caps: list[str], profile: str,
             view: HostView) -> dict[str, Any] | None:
    """moby's WithSeccomp: none for unconfined or privileged (unless a profile is named),
    the default profile, or the user's JSON, resolved for these capabilities."""
    if profile == "unconfined" or (hc.privileged and not profile):
        return None
    document = default_profile() if profile in ("", "builtin") else load_profile(profile)
    return resolve_profile(document, caps, view.machine(), view.kernel())
