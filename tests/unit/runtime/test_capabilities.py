"""Capability names, masks, and the syscall plans of drop_bounding/apply_sets (recorded)."""

from __future__ import annotations

import pytest

from pydeskd.runtime import capabilities
from pydeskd.runtime.capabilities import (
    CAPABILITIES,
    apply_sets,
    cap_mask,
    cap_numbers,
    drop_bounding,
    last_cap,
)
from pydeskd.runtime.errors import SpecError
from pydeskd.runtime.spec import Capabilities
from pydeskd.runtime.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    CapSets,
    RecordingSyscalls,
)


def test_table_matches_the_kernel_numbers() -> None:
    assert len(CAPABILITIES) == 41
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_KILL"] == 5
    assert CAPABILITIES["CAP_NET_BIND_SERVICE"] == 10
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_MKNOD"] == 27
    assert CAPABILITIES["CAP_AUDIT_WRITE"] == 29
    assert CAPABILITIES["CAP_SETFCAP"] == 31
    assert CAPABILITIES["CAP_AUDIT_READ"] == 37
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert sorted(CAPABILITIES.values()) == list(range(41))


def test_mask_of_names() -> None:
    assert cap_mask([]) == 0
    assert cap_mask(["CAP_CHOWN", "CAP_KILL"]) == 0b100001
    assert cap_mask(["CAP_KILL", "CAP_KILL"]) == 1 << 5


def test_unknown_name_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="CAP_FLY"):
        cap_mask(["CAP_CHOWN", "CAP_FLY"])


def test_caps_newer_than_the_kernel_are_skipped() -> None:
    assert cap_numbers(["CAP_BPF", "CAP_CHOWN", "CAP_PERFMON"], last=37) == [0]
    assert cap_numbers(["CAP_BPF"], last=40) == [39]


def test_drop_bounding_drops_everything_not_kept() -> None:
    sys = RecordingSyscalls()
    drop_bounding(sys, ["CAP_CHOWN", "CAP_KILL"])
    dropped = [call[2] for call in sys.calls if call[:2] == ("prctl", PR_CAPBSET_DROP)]
    assert dropped == [n for n in range(last_cap() + 1) if n not in (0, 5)]
    assert len(sys.calls) == len(dropped)


def test_apply_sets_capset_then_ambient_clear_and_raise() -> None:
    sys = RecordingSyscalls()
    caps = Capabilities(bounding=("CAP_KILL",), effective=("CAP_KILL", "CAP_CHOWN"),
                        permitted=("CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"),
                        inheritable=("CAP_KILL",), ambient=("CAP_KILL",))
    apply_sets(sys, caps)
    assert sys.calls == [
        ("capset", CapSets(effective=0b100001, permitted=0b100001 | 1 << 13,
                           inheritable=1 << 5)),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 5, 0, 0),
    ]


def test_apply_sets_validates_before_any_syscall() -> None:
    sys = RecordingSyscalls()
    with pytest.raises(SpecError):
        apply_sets(sys, Capabilities(effective=("CAP_CHOWN",), ambient=("CAP_NOPE",)))
    assert sys.calls == []


def test_last_cap_reads_the_kernel() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert capabilities.last_cap() == int(f.read())
