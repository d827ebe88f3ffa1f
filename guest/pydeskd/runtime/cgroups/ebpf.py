"""cgroup v2 device control: a BPF_PROG_TYPE_CGROUP_DEVICE program built from a device policy.

cgroup v2 has no devices files; the kernel asks an eBPF program attached to the cgroup instead.
:func:`device_program` assembles one from a :class:`DevicePolicy` (pure, unit-tested with an
interpreter), :func:`attach_device_program` loads it with bpf(BPF_PROG_LOAD) and attaches it
with bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI). The attachment holds the
program for the life of the cgroup, so no fd is kept. Never detaches other programs.

The program reads ``struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor;}``,
where access_type = access << 16 | type, and returns 1 (allow) or 0 (deny).
"""

from __future__ import annotations

import ctypes
import os
import struct

from pydeskd.runtime.cgroups.devices import ALL_ACCESS, DeviceException, DevicePolicy
from pydeskd.runtime.errors import SetupFailed

# <linux/bpf.h>
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
DEV_BLOCK, DEV_CHAR = 1, 2
ACCESS_BITS = {"m": 1, "r": 2, "w": 4}
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

# Opcodes used (class | size/op | source).
LDX_W = 0x61  # dst = *(u32 *)(src + off)
ALU64_AND_K = 0x57
ALU64_RSH_K = 0x77
MOV64_K = 0xB7
MOV64_X = 0xBF
JEQ_K = 0x15
JNE_K = 0x55
JNE_X = 0x5D
EXIT = 0x95
# Registers: r1 = ctx on entry; the prologue loads r2 = type, r3 = access, r4 = major,
# r5 = minor; r1 is then scratch; r0 is the verdict.
R0, R1, R2, R3, R4, R5 = range(6)

Insn = tuple[int, int, int, int, int]  # code, dst, src, off, imm


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Insn:
    return (code, dst, src, off, imm)


def _access_mask(access: frozenset[str]) -> int:
    return sum(ACCESS_BITS[a] for a in access)


def _exception_block(ex: DeviceException, default_allow: bool) -> list[Insn]:
    """Returns the verdict opposite to the default when the request matches ``ex``."""
    checks: list[list[Insn]] = [[_insn(JNE_K, R2, imm=DEV_CHAR if ex.type == "c" else DEV_BLOCK)]]
    if ex.access != ALL_ACCESS:
        mask = _access_mask(ex.access)
        if default_allow:  # a deny exception hits when any asked access is in it
            checks.append([_insn(MOV64_X, R1, R3), _insn(ALU64_AND_K, R1, imm=mask),
                           _insn(JEQ_K, R1, imm=0)])
        else:  # an allow exception must cover every asked access
            checks.append([_insn(MOV64_X, R1, R3), _insn(ALU64_AND_K, R1, imm=mask),
                           _insn(JNE_X, R1, R3)])
    if ex.major is not None:
        checks.append([_insn(JNE_K, R4, imm=ex.major)])
    if ex.minor is not None:
        checks.append([_insn(JNE_K, R5, imm=ex.minor)])
    tail = [_insn(MOV64_K, R0, imm=0 if default_allow else 1), _insn(EXIT)]
    block = [insn for check in checks for insn in check] + tail
    # Every check ends in a jump past the block; its offset counts the instructions after it.
    out: list[Insn] = []
    for i, (code, dst, src, _, imm) in enumerate(block):
        off = len(block) - i - 1 if code in (JEQ_K, JNE_K, JNE_X) else 0
        out.append((code, dst, src, off, imm))
    return out


def device_insns(policy: DevicePolicy) -> list[Insn]:
    """The program as instruction tuples (for tests and for :func:`device_program`)."""
    insns = [
        _insn(LDX_W, R2, R1, 0), _insn(ALU64_AND_K, R2, imm=0xFFFF),
        _insn(LDX_W, R3, R1, 0), _insn(ALU64_RSH_K, R3, imm=16),
        _insn(LDX_W, R4, R1, 4), _insn(LDX_W, R5, R1, 8),
    ]
    for ex in policy.exceptions:
        insns += _exception_block(ex, policy.default_allow)
    insns += [_insn(MOV64_K, R0, imm=1 if policy.default_allow else 0), _insn(EXIT)]
    return insns


def device_program(policy: DevicePolicy) -> bytes:
    """The program in the kernel's ``struct bpf_insn`` encoding."""
    return b"".join(struct.pack("<BBhi", code, src << 4 | dst, off, imm)
                    for code, dst, src, off, imm in device_insns(policy))


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    machine = os.uname().machine
    number = _SYS_BPF.get(machine)
    if number is None:
        raise SetupFailed(f"cgroup v2 device control: no bpf(2) number known for {machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.syscall(ctypes.c_long(number), ctypes.c_long(cmd), attr,
                               ctypes.c_long(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def load_device_program(program: bytes) -> int:
    """Loads the program; returns its fd. Raises SetupFailed with the verifier's log."""
    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(65536)
    for log_level in (0, 1):  # on failure, load again with the verifier log for the message
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                         ctypes.addressof(insns), ctypes.addressof(license_), log_level,
                         len(log) if log_level else 0, ctypes.addressof(log) if log_level else 0)
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as err:
            if log_level:
                detail = log.value.decode(errors="replace").strip()
                raise SetupFailed(f"cgroup v2 device control: loading the eBPF program: "
                                  f"{err.strerror}{': ' + detail if detail else ''}") from err
    raise AssertionError("unreachable")


def attach_device_program(cgroup_dir: str, policy: DevicePolicy) -> None:
    """Loads the policy's program and attaches it to ``cgroup_dir``; raises SetupFailed."""
    prog_fd = load_device_program(device_program(policy))
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attr = ctypes.create_string_buffer(32)
            struct.pack_into("<IIII", attr, 0, cg_fd, prog_fd, BPF_CGROUP_DEVICE,
                             BPF_F_ALLOW_MULTI)
            _bpf(BPF_PROG_ATTACH, attr)
        finally:
            os.close(cg_fd)
    except OSError as err:
        raise SetupFailed(f"cgroup v2 device control: attaching to {cgroup_dir}: "
                          f"{err.strerror}") from err
    finally:
        os.close(prog_fd)
