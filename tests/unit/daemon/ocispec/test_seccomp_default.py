"""Docker's default seccomp profile: its content, its resolution, and that pydesk-runc loads it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.ocispec import DEFAULT_CAPABILITIES, default_profile, resolve_profile
from pydeskd.daemon.ocispec.seccomp_default import ALLOWED_SYSCALLS, CLONE_NAMESPACE_FLAGS
from pydeskd.runtime.seccomp import SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, plan_seccomp
from pydeskd.runtime.spec import parse_spec

CAPS = list(DEFAULT_CAPABILITIES)


def names(resolved: dict[str, Any]) -> set[str]:
    return {n for rule in resolved["syscalls"] for n in rule["names"]}


def rules_for(resolved: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in resolved["syscalls"] if name in r["names"]]


def test_default_action_is_eperm_and_the_allowlist_is_docker_sized() -> None:
    profile = default_profile()
    assert (profile["defaultAction"], profile["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    assert len(ALLOWED_SYSCALLS) == 361 == len(set(ALLOWED_SYSCALLS))
    for ordinary in ("read", "write", "openat", "execve", "clock_gettime64", "getuid32",
                     "utimensat_time64", "fstatat64", "lgetxattr", "removexattrat", "rseq"):
        assert ordinary in ALLOWED_SYSCALLS
    for dangerous in ("mount", "unshare", "setns", "ptrace", "reboot", "kexec_load",
                      "init_module", "bpf", "io_uring_setup", "clone", "clone3", "keyctl",
                      "add_key", "userfaultfd", "personality", "socket", "open_by_handle_at"):
        assert dangerous not in ALLOWED_SYSCALLS


def test_x86_64_default_caps() -> None:
    r = resolve_profile(default_profile(), CAPS, "x86_64", (6, 1))
    assert r["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    got = names(r)
    assert {"arch_prctl", "modify_ldt", "chroot", "ptrace", "process_vm_readv"} <= got
    assert not {"mount", "umount2", "unshare", "setns", "reboot", "bpf", "cacheflush",
                "open_by_handle_at", "kcmp"} & got
    (clone,) = rules_for(r, "clone")
    assert clone["args"] == [{"index": 0, "value": CLONE_NAMESPACE_FLAGS,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    assert CLONE_NAMESPACE_FLAGS == 0x7E020000
    (clone3,) = rules_for(r, "clone3")
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    personas = sorted(rule["args"][0]["value"] for rule in rules_for(r, "personality"))
    assert personas == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    (socket,) = rules_for(r, "socket")
    assert socket["args"] == [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]


def test_cap_sys_admin_unlocks_mount_and_lifts_the_clone_filter() -> None:
    r = resolve_profile(default_profile(), [*CAPS, "CAP_SYS_ADMIN"], "x86_64", (6, 1))
    assert {"mount", "umount2", "unshare", "setns", "clone", "clone3", "sethostname"} <= names(r)
    assert all("args" not in rule for rule in rules_for(r, "clone"))
    assert all(rule["action"] == "SCMP_ACT_ALLOW" for rule in rules_for(r, "clone3"))


@pytest.mark.parametrize(("cap", "unlocked"), [
    ("CAP_SYS_PTRACE", {"kcmp", "pidfd_getfd", "process_madvise"}),
    ("CAP_SYS_TIME", {"settimeofday", "clock_settime"}),
    ("CAP_SYS_MODULE", {"init_module", "finit_module", "delete_module"}),
    ("CAP_SYS_BOOT", {"reboot"}),
    ("CAP_DAC_READ_SEARCH", {"open_by_handle_at"}),
    ("CAP_SYS_NICE", {"mbind", "set_mempolicy"}),
    ("CAP_BPF", {"bpf"}),
    ("CAP_PERFMON", {"perf_event_open"}),
])
def test_capability_rules(cap: str, unlocked: set[str]) -> None:
    before = names(resolve_profile(default_profile(), CAPS, "x86_64", (6, 1)))
    after = names(resolve_profile(default_profile(), [*CAPS, cap], "x86_64", (6, 1)))
    assert not unlocked & before
    assert unlocked <= after


def test_no_chroot_without_cap_sys_chroot_and_old_kernels_lose_ptrace() -> None:
    caps = [c for c in CAPS if c != "CAP_SYS_CHROOT"]
    assert "chroot" not in names(resolve_profile(default_profile(), caps, "x86_64", (6, 1)))
    assert "ptrace" not in names(resolve_profile(default_profile(), CAPS, "x86_64", (4, 4)))


def test_aarch64() -> None:
    r = resolve_profile(default_profile(), CAPS, "aarch64", (6, 1))
    assert r["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    got = names(r)
    assert {"cacheflush", "set_tls", "arm_fadvise64_64"} <= got
    assert not {"arch_prctl", "modify_ldt"} & got


def test_a_user_profile_with_architectures_and_name() -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO",
                             "args": [{"index": 0, "value": 1, "valueTwo": 0,
                                       "op": "SCMP_CMP_EQ"}]}]}
    r = resolve_profile(profile, CAPS, "x86_64", (6, 1))
    assert r == {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                 "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                               "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}
    with pytest.raises(InvalidArgument, match="both 'architectures' and 'archMap'"):
        resolve_profile(profile | {"archMap": default_profile()["archMap"]}, CAPS, "x86_64",
                        (6, 1))
    with pytest.raises(InvalidArgument, match="both 'name' and 'names'"):
        resolve_profile({"syscalls": [{"name": "a", "names": ["b"]}]}, CAPS, "x86_64", (6, 1))


def test_pydesk_runc_accepts_the_resolved_profile() -> None:
    resolved = resolve_profile(default_profile(), CAPS, "x86_64", (6, 1))
    spec = parse_spec(json.loads(json.dumps({
        "ociVersion": "1.2.0", "root": {"path": "/r"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"seccomp": resolved}})))
    assert spec.linux.seccomp is not None
    plan = plan_seccomp(spec.linux.seccomp)
    assert plan.default_action == SCMP_ACT_ERRNO | 1
    allowed = {rule.syscall for rule in plan.rules if rule.action == SCMP_ACT_ALLOW}
    assert {"read", "clone", "personality"} <= allowed
    # clone3 answers ENOSYS; personality's five values are five rules (one argument each)
    assert any(r.syscall == "clone3" and r.action == SCMP_ACT_ERRNO | 38 for r in plan.rules)
    assert sum(r.syscall == "personality" for r in plan.rules) == 5
