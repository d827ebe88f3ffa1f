"""The OCI seccomp profile -> libseccomp plan translation (nothing is loaded here)."""

from __future__ import annotations

import errno

import pytest

from pydeskd.runtime.errors import SpecError
from pydeskd.runtime.seccomp import (
    SCMP_ACT_ALLOW,
    SCMP_ACT_ERRNO,
    SCMP_ACT_KILL_PROCESS,
    SCMP_ACT_KILL_THREAD,
    SCMP_ACT_LOG,
    SCMP_ACT_TRACE,
    SCMP_ACT_TRAP,
    SCMP_FLTATR_CTL_LOG,
    SCMP_FLTATR_CTL_NNP,
    SCMP_FLTATR_CTL_SSB,
    SCMP_FLTATR_CTL_TSYNC,
    Condition,
    PlannedRule,
    architecture_name,
    encode_action,
    plan_seccomp,
)
from pydeskd.runtime.spec import Seccomp, SeccompArg, SeccompRule, parse_spec


def test_action_encoding() -> None:
    assert encode_action("SCMP_ACT_ALLOW", None) == 0x7FFF0000 == SCMP_ACT_ALLOW
    assert encode_action("SCMP_ACT_KILL", None) == SCMP_ACT_KILL_THREAD == 0
    assert encode_action("SCMP_ACT_KILL_THREAD", None) == 0
    assert encode_action("SCMP_ACT_KILL_PROCESS", None) == SCMP_ACT_KILL_PROCESS == 0x80000000
    assert encode_action("SCMP_ACT_TRAP", None) == SCMP_ACT_TRAP == 0x00030000
    assert encode_action("SCMP_ACT_LOG", None) == SCMP_ACT_LOG == 0x7FFC0000
    assert encode_action("SCMP_ACT_ERRNO", None) == SCMP_ACT_ERRNO | errno.EPERM == 0x50001
    assert encode_action("SCMP_ACT_ERRNO", errno.ENOSYS) == 0x50000 | 38
    assert encode_action("SCMP_ACT_TRACE", None) == SCMP_ACT_TRACE | errno.EPERM
    assert encode_action("SCMP_ACT_TRACE", 7) == 0x7FF00007
    with pytest.raises(SpecError, match="NOTIFY"):
        encode_action("SCMP_ACT_NOTIFY", None)


def test_architecture_names() -> None:
    assert architecture_name("SCMP_ARCH_X86_64") == "x86_64"
    assert architecture_name("SCMP_ARCH_X86") == "x86"
    assert architecture_name("SCMP_ARCH_X32") == "x32"
    assert architecture_name("SCMP_ARCH_AARCH64") == "aarch64"
    assert architecture_name("SCMP_ARCH_MIPSEL64N32") == "mipsel64n32"
    with pytest.raises(SpecError):
        architecture_name("x86_64")


def test_plan_of_a_docker_like_profile() -> None:
    spec = parse_spec({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "linux": {"seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                      "SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                           "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},  # = default: dropped
                {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            ]}}})
    assert spec.linux.seccomp is not None
    plan = plan_seccomp(spec.linux.seccomp)
    assert plan.default_action == 0x50001
    assert plan.architectures == ("x86_64", "x86", "x32")
    assert plan.attributes == ((SCMP_FLTATR_CTL_NNP, 0), (SCMP_FLTATR_CTL_LOG, 1),
                               (SCMP_FLTATR_CTL_SSB, 1), (SCMP_FLTATR_CTL_TSYNC, 1))
    assert plan.rules == (
        PlannedRule("read", SCMP_ACT_ALLOW, ()), PlannedRule("write", SCMP_ACT_ALLOW, ()),
        PlannedRule("personality", SCMP_ACT_ALLOW, (Condition(0, 4, 0, 0),)),
        PlannedRule("clone", SCMP_ACT_ALLOW, (Condition(0, 7, 2114060288, 0),)),
        PlannedRule("bpf", 0x50000 | 38, ()),
    )


def test_conditions_on_different_args_stay_one_rule() -> None:
    profile = Seccomp("SCMP_ACT_ALLOW", syscalls=(SeccompRule(
        ("socket",), "SCMP_ACT_ERRNO",
        args=(SeccompArg(0, 16, "SCMP_CMP_EQ"), SeccompArg(2, 9, "SCMP_CMP_EQ"))),))
    assert plan_seccomp(profile).rules == (
        PlannedRule("socket", 0x50001, (Condition(0, 4, 16, 0), Condition(2, 4, 9, 0))),)


def test_conditions_sharing_an_arg_are_split_as_runc() -> None:
    profile = Seccomp("SCMP_ACT_ERRNO", syscalls=(SeccompRule(
        ("personality", "setns"), "SCMP_ACT_ALLOW",
        args=(SeccompArg(0, 0, "SCMP_CMP_EQ"), SeccompArg(0, 8, "SCMP_CMP_EQ"),
              SeccompArg(1, 3, "SCMP_CMP_NE"))),))
    rules = plan_seccomp(profile).rules
    assert [(r.syscall, r.conditions) for r in rules] == [
        ("personality", (Condition(0, 4, 0, 0),)), ("personality", (Condition(0, 4, 8, 0),)),
        ("personality", (Condition(1, 1, 3, 0),)),
        ("setns", (Condition(0, 4, 0, 0),)), ("setns", (Condition(0, 4, 8, 0),)),
        ("setns", (Condition(1, 1, 3, 0),)),
    ]


def test_negative_values_become_unsigned_64_bit() -> None:
    profile = Seccomp("SCMP_ACT_ALLOW", syscalls=(SeccompRule(
        ("kill",), "SCMP_ACT_ERRNO", args=(SeccompArg(0, -1, "SCMP_CMP_EQ"),)),))
    assert plan_seccomp(profile).rules[0].conditions == (Condition(0, 4, 2**64 - 1, 0),)


@pytest.mark.parametrize("profile", [
    Seccomp("SCMP_ACT_NOTIFY"),
    Seccomp("SCMP_ACT_ALLOW", syscalls=(SeccompRule(("x",), "SCMP_ACT_NOTIFY"),)),
    Seccomp("SCMP_ACT_ALLOW", flags=("SECCOMP_FILTER_FLAG_NEW_LISTENER",)),
    Seccomp("SCMP_ACT_ALLOW", architectures=("AMD64",)),
    Seccomp("SCMP_ACT_ALLOW", syscalls=(SeccompRule(
        ("kill",), "SCMP_ACT_ERRNO", args=(SeccompArg(6, 1, "SCMP_CMP_EQ"),)),)),
])
def test_unusable_profiles_are_spec_errors(profile: Seccomp) -> None:
    with pytest.raises(SpecError):
        plan_seccomp(profile)
