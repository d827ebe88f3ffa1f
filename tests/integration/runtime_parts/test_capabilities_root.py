"""Capabilities applied for real (LinuxSyscalls) in a forked child, read back from /proc."""

from __future__ import annotations

import json
import os

from pydeskd.runtime.capabilities import apply_sets, cap_mask, drop_bounding
from pydeskd.runtime.spec import Capabilities
from pydeskd.runtime.syscalls import PR_SET_KEEPCAPS, LinuxSyscalls
from tests.integration.runtime_parts.forked import run_in_child

# Docker's default capability set, plus an inheritable/ambient one to exercise every set.
DEFAULT = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
           "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
           "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")


def _status_caps() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                out[key] = int(value.strip(), 16)
    return out


def _apply(caps: Capabilities, uid: int) -> str:
    sys = LinuxSyscalls()
    drop_bounding(sys, caps.bounding)
    sys.prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    apply_sets(sys, caps)
    sys.prctl(PR_SET_KEEPCAPS, 0)
    return json.dumps(_status_caps())


def test_root_process_gets_exactly_the_listed_sets() -> None:
    caps = Capabilities(bounding=DEFAULT, effective=DEFAULT, permitted=DEFAULT,
                        inheritable=("CAP_KILL", "CAP_NET_BIND_SERVICE"),
                        ambient=("CAP_NET_BIND_SERVICE",))
    got = json.loads(run_in_child(lambda: _apply(caps, 0)))
    assert got == {"CapBnd": cap_mask(DEFAULT), "CapEff": cap_mask(DEFAULT),
                   "CapPrm": cap_mask(DEFAULT),
                   "CapInh": cap_mask(["CAP_KILL", "CAP_NET_BIND_SERVICE"]),
                   "CapAmb": cap_mask(["CAP_NET_BIND_SERVICE"])}


def test_non_root_user_keeps_the_listed_sets() -> None:
    caps = Capabilities(bounding=("CAP_KILL", "CAP_CHOWN"), effective=("CAP_KILL",),
                        permitted=("CAP_KILL", "CAP_CHOWN"), inheritable=("CAP_KILL",),
                        ambient=("CAP_KILL",))
    got = json.loads(run_in_child(lambda: _apply(caps, 1000)))
    assert got == {"CapBnd": cap_mask(["CAP_KILL", "CAP_CHOWN"]), "CapEff": 1 << 5,
                   "CapPrm": cap_mask(["CAP_KILL", "CAP_CHOWN"]), "CapInh": 1 << 5,
                   "CapAmb": 1 << 5}


def test_empty_sets_leave_nothing() -> None:
    got = json.loads(run_in_child(lambda: _apply(Capabilities(), 0)))
    assert got == {"CapBnd": 0, "CapEff": 0, "CapPrm": 0, "CapInh": 0, "CapAmb": 0}
