"""The OCI runtime-spec ``config.json`` (1.x) as typed, validated data.

:func:`parse_spec` turns the decoded JSON into immutable typed records and raises
:class:`SpecError` naming the offending field for anything the runtime cannot honour, before
anything is created. Field names are the spec's, in snake_case.

The records are NamedTuples, not the frozen dataclasses the style guide prefers: the runtime
starts for every container, and dataclasses cost ~10 ms of imports (inspect, ast, dis) plus
~0.5 ms per class; NamedTuples are as typed and immutable for a fraction of that (mypy checks
them as ``typing.NamedTuple``, :mod:`pydeskd.runtime.record` builds them without importing
typing). Being tuples, records must never be iterated, unpacked or compared with plain tuples.
"""

from __future__ import annotations

import os

from pydeskd.runtime.errors import SpecError

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from pydeskd.runtime.record import NamedTuple

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
SUPPORTED_NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "cgroup")
RLIMIT_TYPES = (
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
    "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
)
PROPAGATIONS = ("", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                "runbindable")
SECCOMP_OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
                     "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
SECCOMP_ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                   "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
                   "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY")
# libseccomp's architectures, as runc accepts them.
SECCOMP_ARCHES = frozenset(f"SCMP_ARCH_{a}" for a in (
    "X86", "X86_64", "X32", "ARM", "AARCH64", "MIPS", "MIPS64", "MIPS64N32", "MIPSEL",
    "MIPSEL64", "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "RISCV64", "S390", "S390X"))
MAX_ERRNO = 4095  # the kernel's MAX_ERRNO: larger values are not errors to the caller
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")


class Root(NamedTuple):
    path: str  # as written in config.json (relative to the bundle, or absolute)
    readonly: bool = False


class User(NamedTuple):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


class Capabilities(NamedTuple):
    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


class Rlimit(NamedTuple):
    type: str
    hard: int
    soft: int


class ConsoleSize(NamedTuple):
    height: int
    width: int


class Process(NamedTuple):
    args: tuple[str, ...]
    cwd: str = "/"
    env: tuple[str, ...] = ()
    terminal: bool = False
    console_size: ConsoleSize | None = None
    user: User = User()
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    apparmor_profile: str = ""
    selinux_label: str = ""


class Mount(NamedTuple):
    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()


class Hook(NamedTuple):
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


class Hooks(NamedTuple):
    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()


class Namespace(NamedTuple):
    type: str
    path: str = ""


class IdMapping(NamedTuple):
    container_id: int
    host_id: int
    size: int


class Device(NamedTuple):
    type: str  # c, b, u or p
    path: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class DeviceRule(NamedTuple):
    allow: bool
    type: str = "a"  # a, c or b
    major: int | None = None  # None means any (*)
    minor: int | None = None
    access: str = "rwm"


class MemoryResources(NamedTuple):
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool = False


class CpuResources(NamedTuple):
    shares: int | None = None
    quota: int | None = None
    period: int | None = None
    cpus: str = ""
    mems: str = ""


class Resources(NamedTuple):
    devices: tuple[DeviceRule, ...] = ()
    memory: MemoryResources = MemoryResources()
    cpu: CpuResources = CpuResources()
    pids_limit: int | None = None
    unified: tuple[tuple[str, str], ...] = ()  # cgroup v2 file -> value, written as given


class SeccompArg(NamedTuple):
    index: int  # type: ignore[assignment]  # the spec's name; hides tuple.index
    value: int
    op: str
    value_two: int = 0


class SeccompRule(NamedTuple):
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[SeccompArg, ...] = ()


class Seccomp(NamedTuple):
    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    syscalls: tuple[SeccompRule, ...] = ()


class Linux(NamedTuple):
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    cgroups_path: str = ""
    resources: Resources = Resources()
    rootfs_propagation: str = ""
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: tuple[tuple[str, str], ...] = ()
    seccomp: Seccomp | None = None
    mount_label: str = ""

    def namespace(self, kind: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == kind), None)


class Spec(NamedTuple):
    oci_version: str
    root: Root
    process: Process | None = None
    hostname: str = ""
    domainname: str = ""
    mounts: tuple[Mount, ...] = ()
    hooks: Hooks = Hooks()
    annotations: tuple[tuple[str, str], ...] = ()
    linux: Linux = Linux()


# --- parsing -------------------------------------------------------------------------------


class _Reader:
    """Reads one JSON object, naming the field's path in every error."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise SpecError(f"{where or 'config'}: expected an object, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def sub(self, key: str) -> _Reader | None:
        value = self.data.get(key)
        return None if value is None else _Reader(value, self.path(key))

    def text(self, key: str, default: str = "", required: bool = False) -> str:
        value = self.data.get(key)
        if value is None:
            if required:
                raise SpecError(f"{self.path(key)}: required")
            return default
        if not isinstance(value, str):
            raise SpecError(f"{self.path(key)}: expected a string, got {_kind(value)}")
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise SpecError(f"{self.path(key)}: expected true or false, got {_kind(value)}")
        return value

    def integer(self, key: str, required: bool = False) -> int | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise SpecError(f"{self.path(key)}: required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{self.path(key)}: expected an integer, got {_kind(value)}")
        return value

    def req_int(self, key: str) -> int:
        value = self.integer(key, required=True)
        assert value is not None
        return value

    def strs(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{self.path(key)}: expected a list of strings")
        return tuple(value)

    def ints(self, key: str) -> tuple[int, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise SpecError(f"{self.path(key)}: expected a list of integers")
        return tuple(value)

    def objects(self, key: str) -> list[_Reader]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise SpecError(f"{self.path(key)}: expected a list, got {_kind(value)}")
        return [_Reader(item, f"{self.path(key)}[{i}]") for i, item in enumerate(value)]

    def str_map(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise SpecError(f"{self.path(key)}: expected an object of strings")
        return tuple(value.items())


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), "a value")


def _absolute(path: str, where: str) -> str:
    if not path.startswith("/"):
        raise SpecError(f"{where}: {path!r} is not an absolute path")
    return path


def parse_spec(data: Any) -> Spec:
    """Validates decoded ``config.json`` data; raises :class:`SpecError` naming the field."""
    top = _Reader(data, "")
    version = top.text("ociVersion", required=True)
    if not version.startswith("1."):
        raise SpecError(f"ociVersion: {version!r} is not a runtime-spec 1.x version")
    root_r = top.sub("root")
    if root_r is None:
        raise SpecError("root: required")
    root = Root(path=root_r.text("path", required=True), readonly=root_r.flag("readonly"))
    proc_r = top.sub("process")
    mounts = tuple(_parse_mount(m) for m in top.objects("mounts"))
    hooks_r = top.sub("hooks")
    linux_r = top.sub("linux")
    spec = Spec(
        oci_version=version,
        root=root,
        process=_parse_process(proc_r) if proc_r else None,
        hostname=top.text("hostname"),
        domainname=top.text("domainname"),
        mounts=mounts,
        hooks=_parse_hooks(hooks_r) if hooks_r else Hooks(),
        annotations=top.str_map("annotations"),
        linux=_parse_linux(linux_r) if linux_r else Linux(),
    )
    from pydeskd.runtime.validate import validate

    validate(spec)
    return spec


def _parse_process(r: _Reader) -> Process:
    args = r.strs("args")
    if not args:
        raise SpecError(f"{r.path('args')}: at least one argument is required")
    cwd = _absolute(r.text("cwd", required=True), r.path("cwd"))
    for i, entry in enumerate(r.strs("env")):
        if "=" not in entry:
            raise SpecError(f"{r.path('env')}[{i}]: {entry!r} is not NAME=VALUE")
    user_r = r.sub("user")
    user = User()
    if user_r:
        umask = user_r.integer("umask")
        if umask is not None and not 0 <= umask <= 0o777:
            raise SpecError(f"{user_r.path('umask')}: {umask} is not a umask (0 to 0o777)")
        user = User(uid=user_r.integer("uid") or 0, gid=user_r.integer("gid") or 0, umask=umask,
                    additional_gids=user_r.ints("additionalGids"))
    caps_r = r.sub("capabilities")
    caps = None
    if caps_r:
        caps = Capabilities(**{k: _caps(caps_r, k) for k in
                               ("bounding", "effective", "inheritable", "permitted", "ambient")})
    rlimits = []
    for rl in r.objects("rlimits"):
        kind = rl.text("type", required=True)
        if kind not in RLIMIT_TYPES:
            raise SpecError(f"{rl.path('type')}: unknown rlimit {kind!r}")
        rlimits.append(Rlimit(type=kind, hard=rl.req_int("hard"), soft=rl.req_int("soft")))
    oom = r.integer("oomScoreAdj")
    if oom is not None and not -1000 <= oom <= 1000:
        raise SpecError(f"{r.path('oomScoreAdj')}: {oom} is out of range (-1000 to 1000)")
    size_r = r.sub("consoleSize")
    size = ConsoleSize(size_r.req_int("height"), size_r.req_int("width")) if size_r else None
    return Process(
        args=args, cwd=cwd, env=r.strs("env"), terminal=r.flag("terminal"), console_size=size,
        user=user, capabilities=caps, rlimits=tuple(rlimits),
        no_new_privileges=r.flag("noNewPrivileges"), oom_score_adj=oom,
        apparmor_profile=r.text("apparmorProfile"), selinux_label=r.text("selinuxLabel"),
    )


def _caps(r: _Reader, key: str) -> tuple[str, ...]:
    names = r.strs(key)
    for name in names:
        if not name.startswith("CAP_"):
            raise SpecError(f"{r.path(key)}: {name!r} is not a capability name (CAP_...)")
    return names


def _parse_mount(r: _Reader) -> Mount:
    dest = _absolute(r.text("destination", required=True), r.path("destination"))
    return Mount(destination=dest, type=r.text("type"), source=r.text("source"),
                 options=r.strs("options"))


def _parse_hooks(r: _Reader) -> Hooks:
    def hooks(key: str) -> tuple[Hook, ...]:
        out = []
        for h in r.objects(key):
            path = _absolute(h.text("path", required=True), h.path("path"))
            timeout = h.integer("timeout")
            if timeout is not None and timeout <= 0:
                raise SpecError(f"{h.path('timeout')}: must be greater than zero")
            out.append(Hook(path=path, args=h.strs("args"), env=h.strs("env"), timeout=timeout))
        return tuple(out)

    return Hooks(prestart=hooks("prestart"), create_runtime=hooks("createRuntime"),
                 create_container=hooks("createContainer"),
                 start_container=hooks("startContainer"), poststart=hooks("poststart"),
                 poststop=hooks("poststop"))


def _parse_linux(r: _Reader) -> Linux:
    namespaces: list[Namespace] = []
    for ns in r.objects("namespaces"):
        kind = ns.text("type", required=True)
        if kind not in NAMESPACE_TYPES:
            raise SpecError(f"{ns.path('type')}: unknown namespace type {kind!r}")
        if kind not in SUPPORTED_NAMESPACE_TYPES:
            raise SpecError(f"{ns.path('type')}: {kind} namespaces are not supported yet "
                            "by pydesk-runc")
        if any(n.type == kind for n in namespaces):
            raise SpecError(f"{ns.path('type')}: namespace {kind!r} is listed twice")
        path = ns.text("path")
        if path:
            _absolute(path, ns.path("path"))
        namespaces.append(Namespace(type=kind, path=path))
    for key in ("uidMappings", "gidMappings"):
        if r.objects(key):
            raise SpecError(f"{r.path(key)}: user namespaces are not supported yet by pydesk-runc")
    devices = []
    for d in r.objects("devices"):
        kind = d.text("type", required=True)
        if kind not in ("c", "b", "u", "p"):
            raise SpecError(f"{d.path('type')}: unknown device type {kind!r}")
        path = _absolute(d.text("path", required=True), d.path("path"))
        if os.path.normpath(path) in ("/", "//"):
            raise SpecError(f"{d.path('path')}: {path!r} is the root, not a device path")
        # The spec requires major and minor for every type but p (a fifo has neither).
        major = d.integer("major", required=kind != "p")
        minor = d.integer("minor", required=kind != "p")
        devices.append(Device(
            type=kind, path=path, major=major or 0, minor=minor or 0,
            file_mode=d.integer("fileMode"),
            uid=d.integer("uid"), gid=d.integer("gid")))
    propagation = r.text("rootfsPropagation")
    if propagation not in PROPAGATIONS:
        raise SpecError(f"{r.path('rootfsPropagation')}: unknown propagation {propagation!r}")
    masked = r.strs("maskedPaths")
    readonly = r.strs("readonlyPaths")
    for key, paths in (("maskedPaths", masked), ("readonlyPaths", readonly)):
        for i, p in enumerate(paths):
            _absolute(p, f"{r.path(key)}[{i}]")
    res_r = r.sub("resources")
    seccomp_r = r.sub("seccomp")
    return Linux(
        namespaces=tuple(namespaces), devices=tuple(devices),
        cgroups_path=r.text("cgroupsPath"),
        resources=_parse_resources(res_r) if res_r else Resources(),
        rootfs_propagation=propagation, masked_paths=masked, readonly_paths=readonly,
        sysctl=r.str_map("sysctl"), seccomp=_parse_seccomp(seccomp_r) if seccomp_r else None,
        mount_label=r.text("mountLabel"),
    )


def _parse_resources(r: _Reader) -> Resources:
    rules = []
    for d in r.objects("devices"):
        kind = d.text("type", default="a")
        if kind not in ("a", "c", "b"):
            raise SpecError(f"{d.path('type')}: unknown device rule type {kind!r}")
        access = d.text("access", default="rwm")
        if not access or set(access) - set("rwm"):
            raise SpecError(f"{d.path('access')}: {access!r} is not a combination of r, w, m")
        rules.append(DeviceRule(allow=d.flag("allow"), type=kind, major=d.integer("major"),
                                minor=d.integer("minor"), access=access))
    mem_r = r.sub("memory")
    memory = MemoryResources()
    if mem_r:
        memory = MemoryResources(
            limit=mem_r.integer("limit"), reservation=mem_r.integer("reservation"),
            swap=mem_r.integer("swap"), swappiness=mem_r.integer("swappiness"),
            disable_oom_killer=mem_r.flag("disableOOMKiller"))
    cpu_r = r.sub("cpu")
    cpu = CpuResources()
    if cpu_r:
        cpu = CpuResources(shares=cpu_r.integer("shares"), quota=cpu_r.integer("quota"),
                           period=cpu_r.integer("period"), cpus=cpu_r.text("cpus"),
                           mems=cpu_r.text("mems"))
    pids_r = r.sub("pids")
    return Resources(devices=tuple(rules), memory=memory, cpu=cpu,
                     pids_limit=pids_r.integer("limit") if pids_r else None,
                     unified=r.str_map("unified"))


def _parse_seccomp(r: _Reader) -> Seccomp:
    default = r.text("defaultAction", required=True)
    if default not in SECCOMP_ACTIONS:
        raise SpecError(f"{r.path('defaultAction')}: unknown seccomp action {default!r}")
    rules = []
    for s in r.objects("syscalls"):
        action = s.text("action", required=True)
        if action not in SECCOMP_ACTIONS:
            raise SpecError(f"{s.path('action')}: unknown seccomp action {action!r}")
        args = []
        for a in s.objects("args"):
            op = a.text("op", required=True)
            if op not in SECCOMP_OPERATORS:
                raise SpecError(f"{a.path('op')}: unknown seccomp operator {op!r}")
            args.append(SeccompArg(index=a.req_int("index"), value=a.req_int("value"), op=op,
                                   value_two=a.integer("valueTwo") or 0))
        rules.append(SeccompRule(names=s.strs("names"), action=action,
                                 errno_ret=_errno(s, "errnoRet"), args=tuple(args)))
    arches = r.strs("architectures")
    for i, arch in enumerate(arches):
        if arch not in SECCOMP_ARCHES:
            raise SpecError(f"{r.path('architectures')}[{i}]: {arch!r} is not a valid "
                            "seccomp architecture")
    return Seccomp(default_action=default, default_errno_ret=_errno(r, "defaultErrnoRet"),
                   architectures=arches, flags=r.strs("flags"),
                   syscalls=tuple(rules))


def _errno(r: _Reader, key: str) -> int | None:
    value = r.integer(key)
    if value is not None and not 0 <= value <= MAX_ERRNO:
        raise SpecError(f"{r.path(key)}: {value} is not an errno (0 to {MAX_ERRNO})")
    return value
