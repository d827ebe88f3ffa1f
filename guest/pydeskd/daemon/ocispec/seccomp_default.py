"""Docker's default seccomp profile, as data, and its resolution into an OCI ``linux.seccomp``.

The profile has the semantics of moby's ``profiles/seccomp/default.json`` (Docker 28):
everything not listed fails with EPERM (``SCMP_ACT_ERRNO``, errno 1); an allowlist of
ordinary syscalls; rules gated on the container's capabilities (CAP_SYS_ADMIN unlocks
mount/unshare/setns/clone with namespace flags..., CAP_SYS_PTRACE unlocks ptrace and
process_vm_*, ...); ``clone`` without CAP_SYS_ADMIN only when no CLONE_NEW* flag is set;
``clone3`` answers ENOSYS (so libcs fall back to the filtered ``clone``); ``personality``
only for the harmless personas; ``socket`` of AF_VSOCK refused. The tables are written by
theme and the 32-bit and time64 variants generated, rather than copied from moby.

:func:`resolve_profile` turns a profile (this one, or a user's ``seccomp=<json>``) into what
the runtime loads, exactly as moby's setupSeccomp does: the architectures of the archMap
entry for the host, and only the rules whose includes/excludes (arches, caps, minKernel)
match. Pure: the caller passes the capability set, the architecture and the kernel version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydeskd.containerd.errors import InvalidArgument

ALLOW = "SCMP_ACT_ALLOW"
ERRNO = "SCMP_ACT_ERRNO"
EPERM = 1
ENOSYS = 38


def _words(text: str) -> list[str]:
    return text.split()


def _with_32(names: str) -> list[str]:
    """uid/gid calls also exist as 16-bit-era ``*32`` variants on 32-bit architectures."""
    return [v for n in _words(names) for v in (n, n + "32")]


def _with_time64(names: str) -> list[str]:
    """Calls that take a struct timespec have a ``*_time64`` twin on 32-bit architectures."""
    return [v for n in _words(names) for v in (n, n + "_time64")]


def _with_64(names: str) -> list[str]:
    """Calls with a large-file ``*64`` twin on 32-bit architectures."""
    return [v for n in _words(names) for v in (n, n + "64")]


_XATTR = [f"{prefix}{op}xattr{suffix}" for op in ("get", "list", "set", "remove")
          for prefix, suffix in (("", ""), ("l", ""), ("f", ""), ("", "at"))]

_FILES = _words("""
    access faccessat faccessat2 chdir fchdir getcwd chmod fchmod fchmodat fchmodat2
    creat open openat openat2 close close_range dup dup2 dup3 read readv pread64 preadv
    preadv2 write writev pwrite64 pwritev pwritev2 lseek _llseek fsync fdatasync sync syncfs
    sync_file_range fallocate fadvise64 fadvise64_64 readahead flock link linkat symlink
    symlinkat readlink readlinkat rename renameat renameat2 unlink unlinkat mkdir mkdirat
    rmdir mknod mknodat umask utime utimes futimesat statx newfstatat fstatat64 getdents64
    copy_file_range splice tee vmsplice sendfile64 name_to_handle_at cachestat
    inotify_add_watch inotify_init inotify_init1 inotify_rm_watch fanotify_mark
    ioctl memfd_create memfd_secret
""") + _with_32("chown fchown lchown") + ["fchownat"] + _XATTR + _with_time64(
    "utimensat") + _with_64(
    "fcntl fstat fstatfs ftruncate getdents lstat sendfile stat statfs truncate")

_MEMORY = _words("""
    brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock
    munlockall remap_file_pages membarrier pkey_alloc pkey_free pkey_mprotect
    map_shadow_stack mseal
""")

_PROCESS = _words("""
    execve execveat exit exit_group fork vfork wait4 waitid waitpid kill tkill tgkill
    getpid getppid gettid getpgid getpgrp setpgid getsid setsid getpriority setpriority
    getrlimit setrlimit ugetrlimit prlimit64 getrusage times prctl capget capset seccomp
    restart_syscall set_tid_address get_robust_list set_robust_list rseq uname sysinfo
    getcpu getrandom pidfd_open pidfd_send_signal process_mrelease ioprio_get ioprio_set
    sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr
    sched_getparam sched_setparam sched_getscheduler sched_setscheduler
    sched_get_priority_max sched_get_priority_min get_thread_area set_thread_area
    landlock_add_rule landlock_create_ruleset landlock_restrict_self riscv_hwprobe uretprobe
    futex_requeue futex_wait futex_waitv futex_wake
""") + _with_32("""
    getuid geteuid getgid getegid getresuid getresgid getgroups setuid setgid setreuid
    setregid setresuid setresgid setgroups setfsuid setfsgid
""") + _with_time64("futex sched_rr_get_interval")

_SIGNALS = _words("""
    rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
    rt_tgsigqueueinfo sigaltstack sigprocmask sigreturn signalfd signalfd4 pause alarm
""") + _with_time64("rt_sigtimedwait")

_TIME = _words("""
    time gettimeofday nanosleep getitimer setitimer adjtimex timer_create timer_delete
    timer_getoverrun timerfd_create
""") + _with_64("clock_adjtime clock_gettime timer_gettime timer_settime timerfd_gettime "
                "timerfd_settime") + _with_time64("clock_getres clock_nanosleep")

_IO_WAIT = _words("""
    select _newselect poll epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait
    epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 pipe pipe2
    io_setup io_destroy io_submit io_cancel io_getevents
""") + _with_time64("ppoll pselect6 io_pgetevents")

_NETWORK = _words("""
    socketpair socketcall bind connect listen accept accept4 getsockname getpeername
    getsockopt setsockopt shutdown send sendto sendmsg sendmmsg recv recvfrom recvmsg
""") + _with_time64("recvmmsg")

_IPC = _words("""
    ipc msgctl msgget msgrcv msgsnd semctl semget semop shmat shmctl shmdt shmget
    mq_getsetattr mq_notify mq_open mq_unlink
""") + _with_time64("semtimedop mq_timedreceive mq_timedsend")

_MOUNT_INFO = _words("listmount statmount")

ALLOWED_SYSCALLS: tuple[str, ...] = tuple(sorted(set(
    _FILES + _MEMORY + _PROCESS + _SIGNALS + _TIME + _IO_WAIT + _NETWORK + _IPC + _MOUNT_INFO)))

# Personas a container may switch to: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
# and 0xffffffff (the query form, which changes nothing).
_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
AF_VSOCK = 40
# CLONE_NEWNS|CLONE_NEWCGROUP|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET
CLONE_NAMESPACE_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                         | 0x20000000 | 0x40000000)

# Capability -> what it unlocks (moby's conditional rules).
_CAP_RULES: tuple[tuple[str, str], ...] = (
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    ("CAP_SYS_ADMIN", """bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick
        lookup_dcookie lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount
        mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname
        sethostname setns syslog umount umount2 unshare"""),
)
_CAP_RULES_LATE: tuple[tuple[str, str], ...] = (
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module"),
    ("CAP_SYS_PACCT", "acct"),
    ("CAP_SYS_PTRACE", "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev "
                       "ptrace"),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    ("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    ("CAP_SYS_NICE", "get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
)
# Architecture-specific calls, by Go architecture name (what includes.arches uses).
_ARCH_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("ppc64le",), "sync_file_range2 swapcontext"),
    (("arm", "arm64"), "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint "
                       "cacheflush set_tls"),
    (("amd64", "x32"), "arch_prctl"),
    (("amd64", "x32", "x86"), "modify_ldt"),
    (("s390", "s390x"), "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"),
    (("riscv64",), "riscv_flush_icache"),
)
# Native architecture -> the ones its processes may also use (compat syscall ABIs).
ARCH_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_MIPS64", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32")),
    ("SCMP_ARCH_MIPS64N32", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64")),
    ("SCMP_ARCH_MIPSEL64", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32")),
    ("SCMP_ARCH_MIPSEL64N32", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64")),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", ()),
)
# Go's GOARCH / uname machine -> moby's native name, and native name -> libseccomp's.
_MACHINE_TO_NATIVE = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64",
                      "arm64": "arm64", "armv7l": "arm", "arm": "arm", "i686": "x86",
                      "i386": "x86", "386": "x86", "ppc64le": "ppc64le", "s390x": "s390x",
                      "riscv64": "riscv64"}
_NATIVE_TO_SECCOMP = {"x86": "SCMP_ARCH_X86", "amd64": "SCMP_ARCH_X86_64",
                      "arm": "SCMP_ARCH_ARM", "arm64": "SCMP_ARCH_AARCH64",
                      "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
                      "riscv64": "SCMP_ARCH_RISCV64"}


def _rule(names: Iterable[str], action: str = ALLOW, **extra: Any) -> dict[str, Any]:
    return {"names": list(names), "action": action, **extra}


def _arg(index: int, value: int, op: str) -> dict[str, Any]:
    return {"index": index, "value": value, "op": op}


def default_profile() -> dict[str, Any]:
    """The default profile in Docker's profile format (archMap, includes/excludes)."""
    rules = [
        _rule(ALLOWED_SYSCALLS),
        _rule(["process_vm_readv", "process_vm_writev", "ptrace"],
              includes={"minKernel": "4.8"}),
        _rule(["socket"], args=[_arg(0, AF_VSOCK, "SCMP_CMP_NE")]),
        *(_rule(["personality"], args=[_arg(0, p, "SCMP_CMP_EQ")]) for p in _PERSONAS),
        *(_rule(_words(names), includes={"arches": list(arches)})
          for arches, names in _ARCH_RULES),
        *(_rule(_words(names), includes={"caps": [cap]}) for cap, names in _CAP_RULES),
        # Without CAP_SYS_ADMIN, clone only when no namespace flag is set (arg 0; arg 1 on
        # s390, whose clone takes its arguments in another order).
        _rule(["clone"], args=[_arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
              excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}),
        _rule(["clone"], args=[_arg(1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
              includes={"arches": ["s390", "s390x"]}, excludes={"caps": ["CAP_SYS_ADMIN"]}),
        # clone3's flags live in memory, out of a filter's reach: ENOSYS makes libcs fall
        # back to clone, which the rule above can check.
        _rule(["clone3"], ERRNO, errnoRet=ENOSYS, excludes={"caps": ["CAP_SYS_ADMIN"]}),
        *(_rule(_words(names), includes={"caps": [cap]}) for cap, names in _CAP_RULES_LATE),
    ]
    return {
        "defaultAction": ERRNO, "defaultErrnoRet": EPERM,
        "archMap": [{"architecture": a, "subArchitectures": list(s)} for a, s in ARCH_MAP],
        "syscalls": rules,
    }


def native_arch(machine: str) -> str:
    """moby's native architecture name for ``platform.machine()`` (or a GOARCH)."""
    return _MACHINE_TO_NATIVE.get(machine, machine)


def _kernel_at_least(kernel: tuple[int, int], wanted: str) -> bool:
    major, _, minor = wanted.partition(".")
    try:
        return kernel >= (int(major), int(minor or 0))
    except ValueError:
        raise InvalidArgument(f"invalid kernel version in seccomp profile: {wanted}") from None


def resolve_profile(profile: Mapping[str, Any], capabilities: Sequence[str], machine: str,
                    kernel: tuple[int, int]) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` for ``profile`` (Docker's format) in a container whose
    bounding set is ``capabilities``, on ``machine`` (uname), under ``kernel`` (major, minor).

    Raises InvalidArgument for a malformed profile, with moby's messages.
    """
    if not isinstance(profile, Mapping):
        raise InvalidArgument("Decoding seccomp profile failed: not a JSON object")
    arch = native_arch(machine)
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction", "")}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or [])
    arch_map = profile.get("archMap") or []
    if arches and arch_map:
        raise InvalidArgument("both 'architectures' and 'archMap' are specified in the seccomp "
                              "profile, use either 'architectures' or 'archMap'")
    wanted = _NATIVE_TO_SECCOMP.get(arch)
    for entry in arch_map:
        if entry.get("architecture") == wanted:
            arches = [wanted, *(entry.get("subArchitectures") or [])]
            break
    if arches:
        out["architectures"] = arches
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = profile[key]
    caps = set(capabilities)
    syscalls = []
    for call in profile.get("syscalls") or []:
        names = call.get("names") or []
        if call.get("name"):
            if names:
                raise InvalidArgument("both 'name' and 'names' are specified in the seccomp "
                                      "profile, use either 'name' or 'names'")
            names = [call["name"]]
        if not _applies(call, caps, arch, kernel):
            continue
        rule: dict[str, Any] = {"names": list(names), "action": call.get("action", "")}
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            rule["args"] = [{k: v for k, v in a.items() if k != "valueTwo" or v}
                            for a in call["args"]]
        syscalls.append(rule)
    if syscalls:
        out["syscalls"] = syscalls
    return out


def _applies(call: Mapping[str, Any], caps: set[str], arch: str,
             kernel: tuple[int, int]) -> bool:
    excludes = call.get("excludes") or {}
    if arch in (excludes.get("arches") or ()):
        return False
    if any(c in caps for c in excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and _kernel_at_least(kernel, excludes["minKernel"]):
        return False
    includes = call.get("includes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if not all(c in caps for c in includes.get("caps") or ()):
        return False
    return not (includes.get("minKernel")
                and not _kernel_at_least(kernel, includes["minKernel"]))


def load_profile(text: str) -> dict[str, Any]:
    """A user's profile (``--security-opt seccomp=<json>``), decoded; InvalidArgument if not."""
    try:
        profile = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"Decoding seccomp profile failed: {e}") from None
    if not isinstance(profile, dict):
        raise InvalidArgument("Decoding seccomp profile failed: not a JSON object")
    return profile
