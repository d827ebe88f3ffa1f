"""Device rules -> policy (v1 kernel semantics), and the eBPF program run in a small interpreter
against that policy for every device/access combination."""

from __future__ import annotations

import itertools
import struct

import pytest

from pydeskd.runtime.cgroups import ebpf
from pydeskd.runtime.cgroups.devices import DeviceException, DevicePolicy, device_policy
from pydeskd.runtime.spec import DeviceRule

DENY_ALL = DeviceRule(allow=False)
ALLOW_ALL = DeviceRule(allow=True)


def rule(allow: bool, kind: str, major: int | None, minor: int | None,
         access: str = "rwm") -> DeviceRule:
    return DeviceRule(allow=allow, type=kind, major=major, minor=minor, access=access)


# runc's default allow-list (after a deny-all), as Docker sends it.
DOCKER = (DENY_ALL, rule(True, "c", None, None, "m"), rule(True, "b", None, None, "m"),
          rule(True, "c", 1, 3), rule(True, "c", 1, 8), rule(True, "c", 1, 7),
          rule(True, "c", 5, 0), rule(True, "c", 1, 5), rule(True, "c", 1, 9),
          rule(True, "c", 5, 1), rule(True, "c", 136, None), rule(True, "c", 5, 2),
          rule(False, "c", 10, 200))


def test_deny_all_then_allows() -> None:
    policy = device_policy(DOCKER)
    assert not policy.default_allow
    assert [e.line() for e in policy.exceptions][:4] == ["c *:* m", "b *:* m", "c 1:3 rwm",
                                                          "c 1:8 rwm"]
    assert policy.allows("c", 1, 3, "rw")
    assert policy.allows("c", 136, 4, "r")
    assert policy.allows("b", 8, 0, "m")
    assert not policy.allows("b", 8, 0, "r")
    assert not policy.allows("c", 10, 200, "r")
    assert not policy.allows("c", 1, 4, "r")


def test_a_rule_agreeing_with_the_default_removes_an_exception() -> None:
    policy = device_policy((DENY_ALL, rule(True, "c", 1, 3), rule(False, "c", 1, 3, "w")))
    assert policy.exceptions == (DeviceException("c", 1, 3, frozenset("rm")),)
    policy = device_policy((DENY_ALL, rule(True, "c", 1, 3), rule(False, "c", 1, 3)))
    assert policy.exceptions == ()


def test_no_hole_punched_in_a_wildcard() -> None:
    # As the v1 kernel: denying c 1:3 does not carve it out of an allowed c *:*.
    policy = device_policy((DENY_ALL, rule(True, "c", None, None), rule(False, "c", 1, 3)))
    assert policy.allows("c", 1, 3, "r")


def test_all_rule_resets_and_partial_a_rules_split() -> None:
    policy = device_policy((DENY_ALL, rule(True, "c", 1, 3), ALLOW_ALL,
                            rule(False, "a", 7, None, "r")))
    assert policy.default_allow
    assert [e.line() for e in policy.exceptions] == ["c 7:* r", "b 7:* r"]
    assert not policy.allows("b", 7, 1, "rw")  # a deny exception hits on any overlap
    assert policy.allows("b", 7, 1, "w")


def test_merging_access_for_the_same_device() -> None:
    policy = device_policy((DENY_ALL, rule(True, "c", 1, 3, "r"), rule(True, "c", 1, 3, "w")))
    assert [e.line() for e in policy.exceptions] == ["c 1:3 rw"]


# --- the eBPF program ------------------------------------------------------------------------


def run(program: bytes, kind: int, major: int, minor: int, access: int) -> int:
    """Interprets the opcodes ebpf.py emits, as the kernel would, on one bpf_cgroup_dev_ctx."""
    ctx = struct.pack("<III", access << 16 | kind, major, minor)
    regs = [0] * 11
    insns = [struct.unpack("<BBhi", program[i:i + 8]) for i in range(0, len(program), 8)]
    pc = 0
    for _ in range(10_000):
        code, regbits, off, imm = insns[pc]
        dst, src = regbits & 0xF, regbits >> 4
        pc += 1
        u64 = imm & 0xFFFFFFFFFFFFFFFF  # immediates are sign-extended to 64 bits
        if code == ebpf.LDX_W:
            assert src == 1, "only the context is ever read"
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == ebpf.ALU64_AND_K:
            regs[dst] &= u64
        elif code == ebpf.ALU64_RSH_K:
            regs[dst] >>= imm
        elif code == ebpf.MOV64_K:
            regs[dst] = u64
        elif code == ebpf.MOV64_X:
            regs[dst] = regs[src]
        elif code == ebpf.JEQ_K:
            pc += off if regs[dst] == u64 else 0
        elif code == ebpf.JNE_K:
            pc += off if regs[dst] != u64 else 0
        elif code == ebpf.JNE_X:
            pc += off if regs[dst] != regs[src] else 0
        elif code == ebpf.EXIT:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("program did not exit")


DEVICES = [("c", 1, 3), ("c", 1, 5), ("c", 1, 9), ("c", 136, 0), ("c", 10, 200), ("b", 8, 0),
           ("b", 7, 1), ("c", 7, 2), ("c", 5, 0)]
ACCESSES = ["r", "w", "m", "rw", "rm", "rwm"]


@pytest.mark.parametrize("rules", [
    (), DOCKER, (ALLOW_ALL,), (ALLOW_ALL, rule(False, "c", 1, 9, "r")),
    (ALLOW_ALL, rule(False, "a", 7, None, "rw")), (DENY_ALL, rule(True, "c", 1, 5, "w")),
    (DENY_ALL, rule(True, "b", None, 1, "rm"), rule(True, "c", 5, None)),
], ids=lambda r: str(len(r)))
def test_program_decides_as_the_policy(rules: tuple[DeviceRule, ...]) -> None:
    policy = device_policy(rules)
    program = ebpf.device_program(policy)
    assert len(program) % 8 == 0
    for (kind, major, minor), access in itertools.product(DEVICES, ACCESSES):
        bits = sum(ebpf.ACCESS_BITS[a] for a in access)
        type_code = ebpf.DEV_CHAR if kind == "c" else ebpf.DEV_BLOCK
        verdict = run(program, type_code, major, minor, bits)
        assert verdict == int(policy.allows(kind, major, minor, access)), \
            (kind, major, minor, access)


def test_empty_policy_program_is_just_the_default() -> None:
    insns = ebpf.device_insns(DevicePolicy(False, ()))
    assert insns[-2:] == [(ebpf.MOV64_K, 0, 0, 0, 0), (ebpf.EXIT, 0, 0, 0, 0)]
    assert len(insns) == 8
