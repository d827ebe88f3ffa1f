"""The container's seccomp filter, built and loaded with libseccomp (libseccomp.so.2, ctypes).

:func:`plan_seccomp` turns the OCI profile into plain data (actions encoded, rules split the
way runc splits them) and is unit-tested; :func:`build_seccomp` hands that plan to libseccomp
and returns a :class:`Filter` to load later (the init builds it before "ready", so a refused
profile fails ``create``); :func:`load_seccomp` builds and loads at once. As runc: syscall
names this libseccomp does not know are skipped, rules whose action equals the default are
dropped, and libseccomp is told not to set no_new_privs itself (the runtime decides). Not done
(runc's "patchbpf"): returning ENOSYS instead of the default action for syscalls newer than
the profile. This module never loads anything on import.
"""

from __future__ import annotations

import ctypes
import errno
import os

from pydeskd.runtime.errors import SetupFailed, SpecError
from pydeskd.runtime.spec import Seccomp, SeccompArg

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import NamedTuple
else:
    from pydeskd.runtime.record import NamedTuple

# <seccomp.h> action values.
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_ERRNO = 0x00050000
SCMP_ACT_TRACE = 0x7FF00000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000
_FIXED_ACTIONS = {
    "SCMP_ACT_KILL": SCMP_ACT_KILL_THREAD, "SCMP_ACT_KILL_THREAD": SCMP_ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": SCMP_ACT_KILL_PROCESS, "SCMP_ACT_TRAP": SCMP_ACT_TRAP,
    "SCMP_ACT_LOG": SCMP_ACT_LOG, "SCMP_ACT_ALLOW": SCMP_ACT_ALLOW,
}
# enum scmp_compare
OPERATORS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
             "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# enum scmp_filter_attr
SCMP_FLTATR_CTL_NNP = 3
SCMP_FLTATR_CTL_TSYNC = 4
SCMP_FLTATR_CTL_LOG = 6
SCMP_FLTATR_CTL_SSB = 7
SCMP_FLTATR_API_SYSRAWRC = 9  # libseccomp >= 2.5: report the kernel's errno, not ECANCELED
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": SCMP_FLTATR_CTL_TSYNC,
         "SECCOMP_FILTER_FLAG_LOG": SCMP_FLTATR_CTL_LOG,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SCMP_FLTATR_CTL_SSB}
MAX_ARGS = 6
_NR_SCMP_ERROR = -1


class Condition(NamedTuple):
    """``struct scmp_arg_cmp``: for MASKED_EQ, ``datum_a`` is the mask and ``datum_b`` the value."""

    arg: int
    op: int
    datum_a: int
    datum_b: int


class PlannedRule(NamedTuple):
    syscall: str
    action: int
    conditions: tuple[Condition, ...]  # ANDed; an empty tuple matches every call


class SeccompPlan(NamedTuple):
    default_action: int
    architectures: tuple[str, ...]  # libseccomp's names: "x86_64", "x86", "aarch64", ...
    attributes: tuple[tuple[int, int], ...]  # (scmp_filter_attr, value), in order
    rules: tuple[PlannedRule, ...]


def encode_action(action: str, errno_ret: int | None) -> int:
    """The libseccomp action value; ERRNO and TRACE default to EPERM, as in runc."""
    if action in _FIXED_ACTIONS:
        return _FIXED_ACTIONS[action]
    code = errno.EPERM if errno_ret is None else errno_ret
    if action == "SCMP_ACT_ERRNO":
        return SCMP_ACT_ERRNO | (code & 0xFFFF)
    if action == "SCMP_ACT_TRACE":
        return SCMP_ACT_TRACE | (code & 0xFFFF)
    if action == "SCMP_ACT_NOTIFY":
        raise SpecError("linux.seccomp: SCMP_ACT_NOTIFY (a seccomp agent) is not supported")
    raise SpecError(f"linux.seccomp: unknown action {action!r}")


def architecture_name(spec_name: str) -> str:
    """"SCMP_ARCH_X86_64" -> "x86_64" (libseccomp's spelling); SpecError if not one."""
    if not spec_name.startswith("SCMP_ARCH_") or len(spec_name) == len("SCMP_ARCH_"):
        raise SpecError(f"linux.seccomp.architectures: {spec_name!r} is not an architecture")
    return spec_name[len("SCMP_ARCH_"):].lower()


def _condition(arg: SeccompArg) -> Condition:
    if not 0 <= arg.index < MAX_ARGS:
        raise SpecError(f"linux.seccomp: argument index {arg.index} is out of range (0-5)")
    return Condition(arg.index, OPERATORS[arg.op], arg.value & 0xFFFFFFFFFFFFFFFF,
                     arg.value_two & 0xFFFFFFFFFFFFFFFF)


def _split(conditions: list[Condition]) -> list[tuple[Condition, ...]]:
    """runc's rule: libseccomp ANDs conditions, but refuses two on one argument, so when an
    argument index repeats, each condition becomes a rule of its own (matched as OR)."""
    indexes = [c.arg for c in conditions]
    if len(set(indexes)) != len(indexes):
        return [(c,) for c in conditions]
    return [tuple(conditions)]


def plan_seccomp(profile: Seccomp) -> SeccompPlan:
    """The filter ``profile`` describes, as data; raises :class:`SpecError` for what cannot be."""
    default = encode_action(profile.default_action, profile.default_errno_ret)
    arches = tuple(dict.fromkeys(architecture_name(a) for a in profile.architectures))
    attributes = [(SCMP_FLTATR_CTL_NNP, 0)]  # no_new_privs is the runtime's decision
    for flag in profile.flags:
        if flag not in FLAGS:
            raise SpecError(f"linux.seccomp.flags: unsupported flag {flag!r}")
        attributes.append((FLAGS[flag], 1))
    rules: list[PlannedRule] = []
    for rule in profile.syscalls:
        action = encode_action(rule.action, rule.errno_ret)
        if action == default:
            continue  # redundant: libseccomp refuses a rule with the default action
        conditions = [_condition(a) for a in rule.args]
        for name in rule.names:
            for group in _split(conditions) if conditions else [()]:
                rules.append(PlannedRule(name, action, group))
    return SeccompPlan(default, arches, tuple(attributes), tuple(rules))


# --- libseccomp --------------------------------------------------------------------------------


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _library() -> ctypes.CDLL:
    name = "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        # Slow (it may run ldconfig): only when the soname itself is not found.
        from ctypes.util import find_library

        found = find_library("seccomp")
        if found is None:
            raise SetupFailed("seccomp: libseccomp.so.2 is not installed") from None
        lib = ctypes.CDLL(found)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def _check(result: int, what: str) -> None:
    if result < 0:
        raise SetupFailed(f"seccomp: {what}: {os.strerror(-result)} (errno {-result})")


class Filter:
    """A filter built in libseccomp but not loaded yet: :meth:`load` it, or :meth:`release` it."""

    def __init__(self, lib: ctypes.CDLL, ctx: int) -> None:
        self._lib = lib
        self._ctx = ctx

    def load(self) -> None:
        """Loads the filter into the calling process, then releases it."""
        try:
            _check(self._lib.seccomp_load(self._ctx), "loading the filter")
        finally:
            self.release()

    def release(self) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = 0


def build_seccomp(profile: Seccomp) -> Filter:
    """Builds the filter without loading it, so that a profile libseccomp refuses fails
    ``create`` rather than the container's start.

    Raises :class:`SpecError` for an unusable profile (before touching libseccomp),
    :class:`SetupFailed` with libseccomp's errno when building fails.
    """
    plan = plan_seccomp(profile)
    lib = _library()
    ctx = lib.seccomp_init(plan.default_action)
    if not ctx:
        raise SetupFailed("seccomp: seccomp_init failed")
    built = Filter(lib, ctx)
    try:
        lib.seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1)  # best effort: older ones lack it
        for arch in plan.architectures:
            token = lib.seccomp_arch_resolve_name(arch.encode())
            if token == 0:
                raise SpecError(f"linux.seccomp.architectures: libseccomp does not know {arch!r}")
            result = lib.seccomp_arch_add(ctx, token)
            if result != -errno.EEXIST:  # the native architecture is always there
                _check(result, f"adding architecture {arch}")
        for attr, value in plan.attributes:
            _check(lib.seccomp_attr_set(ctx, attr, value), f"setting filter attribute {attr}")
        _add_rules(lib, ctx, plan.rules)
    except BaseException:
        built.release()
        raise
    return built


def load_seccomp(profile: Seccomp) -> None:
    """Builds the filter and loads it into the calling process (see :func:`build_seccomp`)."""
    build_seccomp(profile).load()


def _add_rules(lib: ctypes.CDLL, ctx: int, rules: Iterable[PlannedRule]) -> None:
    numbers: dict[str, int] = {}
    for rule in rules:
        if rule.syscall not in numbers:
            numbers[rule.syscall] = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
        number = numbers[rule.syscall]
        if number == _NR_SCMP_ERROR:
            continue  # unknown to this libseccomp: skipped, as runc does
        # Other negative numbers are libseccomp's pseudo-syscalls (e.g. socketcall on x86_64)
        # for calls that exist on another listed architecture: valid in a rule.
        conds = (_ArgCmp * max(1, len(rule.conditions)))(
            *[_ArgCmp(c.arg, c.op, c.datum_a, c.datum_b) for c in rule.conditions])
        _check(lib.seccomp_rule_add_array(ctx, rule.action, number, len(rule.conditions), conds),
               f"adding a rule for {rule.syscall}")
