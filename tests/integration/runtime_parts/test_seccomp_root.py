"""Seccomp filters loaded for real (libseccomp) in forked children; results come back by pipe."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import subprocess
import tempfile

import pytest

from pydeskd.runtime.errors import SetupFailed, SpecError
from pydeskd.runtime.seccomp import load_seccomp
from pydeskd.runtime.spec import Seccomp, SeccompArg, SeccompRule
from pydeskd.runtime.syscalls import CapSets, LinuxSyscalls
from tests.integration.runtime_parts.forked import run_in_child

_libc = ctypes.CDLL(None, use_errno=True)
_libc.personality.argtypes = [ctypes.c_ulong]


def _personality(persona: int) -> int:
    """personality(2); returns the errno, or 0 on success."""
    result = _libc.personality(persona)
    return ctypes.get_errno() if result == -1 else 0


def _priority_errno(which: int, who: int) -> int:
    try:
        os.getpriority(which, who)
        return 0
    except OSError as err:
        return err.errno or -1


def _mkdir_errno(path: str) -> int:
    try:
        os.mkdir(path)
        os.rmdir(path)
        return 0
    except OSError as err:
        return err.errno or -1


PROFILE = Seccomp(
    default_action="SCMP_ACT_ALLOW",
    architectures=("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    syscalls=(
        SeccompRule(("mkdir", "mkdirat", "no_such_syscall_anywhere"), "SCMP_ACT_ERRNO"),
        # personality: only the query (0xffffffff) passes; any change gets ENOSYS.
        SeccompRule(("personality",), "SCMP_ACT_ERRNO", errno_ret=errno.ENOSYS,
                    args=(SeccompArg(0, 0xFFFFFFFF, "SCMP_CMP_NE"),)),
        # Two conditions on different arguments are ANDed.
        SeccompRule(("getpriority",), "SCMP_ACT_ERRNO", errno_ret=errno.EACCES,
                    args=(SeccompArg(0, os.PRIO_PROCESS, "SCMP_CMP_EQ"),
                          SeccompArg(1, 4194999, "SCMP_CMP_EQ"))),
    ),
)


def test_denied_and_conditional_syscalls() -> None:
    where = tempfile.mkdtemp(prefix="pydesk-test-seccomp-")
    try:
        def child() -> str:
            load_seccomp(PROFILE)
            return json.dumps({
                "mkdir": _mkdir_errno(os.path.join(where, "d")),
                "query": _personality(0xFFFFFFFF),
                "other": _personality(0x0008),
                "getpid": os.getpid() > 0,
                "prio_both": _priority_errno(os.PRIO_PROCESS, 4194999),
                "prio_one": _priority_errno(os.PRIO_PGRP, 4194999),
                "prio_other": _priority_errno(os.PRIO_PROCESS, 0),
                "nnp": open("/proc/self/status").read().split("NoNewPrivs:")[1].split()[0],
                "mode": open("/proc/self/status").read().split("Seccomp:")[1].split()[0],
            })

        got = json.loads(run_in_child(child))
    finally:
        os.rmdir(where)
    assert got == {"mkdir": errno.EPERM, "query": 0, "other": errno.ENOSYS, "getpid": True,
                   "prio_both": errno.EACCES, "prio_one": errno.ESRCH, "prio_other": 0,
                   "nnp": "0", "mode": "2"}
    # The parent (pytest) is untouched.
    assert _personality(0xFFFFFFFF) == 0


def test_masked_eq_and_default_errno() -> None:
    profile = Seccomp(
        default_action="SCMP_ACT_ERRNO", default_errno_ret=errno.EACCES,
        syscalls=(
            SeccompRule(("write", "exit_group", "exit", "rt_sigreturn", "getpid", "brk",
                         "mmap", "munmap", "futex", "close", "rt_sigprocmask", "madvise"),
                        "SCMP_ACT_ALLOW"),
            # umask allowed only when the mask's group bits (0o070) are all clear.
            SeccompRule(("umask",), "SCMP_ACT_ALLOW",
                        args=(SeccompArg(0, 0o070, "SCMP_CMP_MASKED_EQ", 0),)),
        ))

    def child() -> str:
        libc = ctypes.CDLL(None, use_errno=True)
        load_seccomp(profile)
        allowed = libc.umask(0o007)
        denied = libc.umask(0o077)
        opened = libc.open(b"/etc/hostname", 0)
        open_errno = ctypes.get_errno()
        os.write(1, b"")  # allowed
        return json.dumps([allowed >= 0, denied, opened, open_errno])

    # glibc's umask() cannot fail, so it hands back the raw -EACCES.
    assert json.loads(run_in_child(child)) == [True, -errno.EACCES, -1, errno.EACCES]


def test_kill_process_action() -> None:
    profile = Seccomp("SCMP_ACT_ALLOW", syscalls=(SeccompRule(("getppid",),
                                                              "SCMP_ACT_KILL_PROCESS"),))

    def child() -> str:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS dumps core otherwise
        load_seccomp(profile)
        os.getppid()
        return "survived"

    with pytest.raises(AssertionError, match="wait status 31"):  # killed by SIGSYS
        run_in_child(child)


def test_errors_before_and_during_loading() -> None:
    with pytest.raises(SpecError):
        load_seccomp(Seccomp("SCMP_ACT_NOTIFY"))
    with pytest.raises(SpecError, match="does not know"):
        load_seccomp(Seccomp("SCMP_ACT_ALLOW", architectures=("SCMP_ARCH_PDP11",)))

    def child() -> str:
        # Without no_new_privs, loading needs CAP_SYS_ADMIN: drop it and expect EACCES.
        sys = LinuxSyscalls()
        caps = sys.capget()
        without = ~(1 << 21)
        sys.capset(CapSets(caps.effective & without, caps.permitted & without,
                           caps.inheritable & without))
        try:
            load_seccomp(Seccomp("SCMP_ACT_ALLOW", syscalls=(
                SeccompRule(("getpid",), "SCMP_ACT_ERRNO"),)))
        except SetupFailed as err:
            return str(err)
        return "loaded"

    assert "loading the filter" in (message := run_in_child(child))
    assert f"errno {errno.EACCES}" in message


def _native_syscall_names() -> list[str]:
    """Every syscall name libseccomp knows on this architecture (numbers 0..499)."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p  # char *, caller frees
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    names = []
    for number in range(500):
        pointer = lib.seccomp_syscall_resolve_num_arch(0, number)  # 0: the native arch
        if pointer:
            names.append(ctypes.string_at(pointer).decode())
            libc.free(pointer)
    return names


def test_a_large_allow_list_profile_runs_real_programs() -> None:
    """A Docker-sized profile: default EPERM, several hundred names allowed (some unknown to
    libseccomp, skipped), then a child that forks, execs and exits normally."""
    names = [n for n in _native_syscall_names() if n not in ("mkdir", "mkdirat")]
    assert len(names) > 300
    profile = Seccomp(
        default_action="SCMP_ACT_ERRNO",
        architectures=("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
        syscalls=(SeccompRule((*names, "pydesk_future_syscall"), "SCMP_ACT_ALLOW"),))
    where = tempfile.mkdtemp(prefix="pydesk-test-seccomp-")
    try:
        def child() -> str:
            load_seccomp(profile)
            done = subprocess.run(["/bin/sh", "-c", "echo hi; exit 3"], capture_output=True,
                                  text=True, check=False)
            return json.dumps([done.stdout, done.returncode,
                               _mkdir_errno(os.path.join(where, "d"))])

        assert json.loads(run_in_child(child)) == ["hi\n", 3, errno.EPERM]
    finally:
        os.rmdir(where)
