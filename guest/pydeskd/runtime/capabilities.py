"""Linux capabilities of the container process: the name table and the two steps that set them.

The runtime's init calls :func:`drop_bounding` while it is still root with every capability,
then (after switching user with PR_SET_KEEPCAPS) :func:`apply_sets`. Every syscall goes through
the :class:`~pydeskd.runtime.syscalls.Syscalls` seam, so the plan is unit-tested by recording.
This module must never raise a capability: it only drops, or sets what config.json lists.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from pydeskd.runtime.errors import SetupFailed, SpecError
from pydeskd.runtime.spec import Capabilities
from pydeskd.runtime.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    CapSets,
    Syscalls,
)

# <linux/capability.h>, in kernel order.
_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
CAPABILITIES: dict[str, int] = {f"CAP_{name}": number for number, name in enumerate(_NAMES)}

_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"
_last_cap_cache: int | None = None


def last_cap() -> int:
    """The highest capability number the running kernel knows (read once per process)."""
    global _last_cap_cache  # noqa: PLW0603 - one read per process is enough
    if _last_cap_cache is None:
        try:
            with open(_CAP_LAST_CAP) as f:
                _last_cap_cache = int(f.read())
        except OSError:
            # Kernels before 3.2 lack the file; every name in the table is then assumed known.
            _last_cap_cache = max(CAPABILITIES.values())
    return _last_cap_cache


def cap_numbers(names: Iterable[str], last: int | None = None) -> list[int]:
    """Capability numbers for ``names``, in order, without duplicates.

    Raises :class:`SpecError` for a name not in :data:`CAPABILITIES`. Capabilities newer than the
    kernel (above ``cap_last_cap``) are skipped, as runc does, so one config runs on old kernels.
    """
    top = last_cap() if last is None else last
    numbers: list[int] = []
    for name in names:
        number = CAPABILITIES.get(name)
        if number is None:
            raise SpecError(f"unknown capability {name!r}")
        if number <= top and number not in numbers:
            numbers.append(number)
    return numbers


def cap_mask(names: Iterable[str]) -> int:
    """The bit mask of ``names`` (see :func:`cap_numbers` for errors and skipped names)."""
    mask = 0
    for number in cap_numbers(names):
        mask |= 1 << number
    return mask


def drop_bounding(sys: Syscalls, keep: Iterable[str]) -> None:
    """Drops every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP).

    Raises :class:`SpecError` for an unknown name, :class:`SetupFailed` if a drop fails.
    """
    kept = set(cap_numbers(keep))
    for number in range(last_cap() + 1):
        if number in kept:
            continue
        try:
            sys.prctl(PR_CAPBSET_DROP, number)
        except OSError as err:
            # EINVAL: the kernel does not know this capability, so it is not in the set anyway.
            if err.errno != errno.EINVAL:
                raise SetupFailed(f"dropping capability {_NAMES[number]} from the bounding "
                                  f"set: {err.strerror}") from err


def apply_sets(sys: Syscalls, caps: Capabilities) -> None:
    """Sets the effective, permitted and inheritable sets, then exactly the ambient ``caps``.

    Raises :class:`SpecError` for an unknown name, :class:`SetupFailed` if the kernel refuses
    (an ambient capability must also be permitted and inheritable).
    """
    sets = CapSets(effective=cap_mask(caps.effective), permitted=cap_mask(caps.permitted),
                   inheritable=cap_mask(caps.inheritable))
    ambient = cap_numbers(caps.ambient)
    try:
        sys.capset(sets)
    except OSError as err:
        raise SetupFailed(f"setting capabilities: {err.strerror}") from err
    try:
        sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as err:
        if err.errno == errno.EINVAL and not ambient:
            return  # a kernel before 4.3 has no ambient set; nothing was asked of it
        raise SetupFailed(f"clearing ambient capabilities: {err.strerror}") from err
    for number in ambient:
        try:
            sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)
        except OSError as err:
            raise SetupFailed(f"raising ambient capability CAP_{_NAMES[number]}: "
                              f"{err.strerror}") from err
