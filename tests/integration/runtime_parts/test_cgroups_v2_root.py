"""cgroup v2 for real where this host has it: the (controller-less) cgroup2 of the hybrid layout
at /sys/fs/cgroup/unified, or /sys/fs/cgroup itself on a pure v2 host. Proves the eBPF device
program: a denied device open fails with EPERM, an allowed one works; plus freeze and cleanup."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from pydeskd.runtime.cgroups import open_cgroup
from pydeskd.runtime.cgroups.layout import detect_layout, parse_mountinfo
from pydeskd.runtime.errors import SetupFailed
from pydeskd.runtime.spec import DeviceRule, Resources
from tests.integration.runtime_parts.cgroup_fixtures import go, parked, unique


def _v2_root() -> str | None:
    if detect_layout().version == 2:
        return "/sys/fs/cgroup"
    with open("/proc/self/mountinfo") as f:
        points = [m.mountpoint for m in parse_mountinfo(f.read()) if m.fstype == "cgroup2"]
    return "/sys/fs/cgroup/unified" if "/sys/fs/cgroup/unified" in points else None


ROOT = _v2_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="no cgroup2 mount on this host")


@pytest.fixture
def top() -> Iterator[str]:
    assert ROOT is not None
    name = unique()
    yield name
    left = []
    for dirpath, _, _ in sorted(os.walk(os.path.join(ROOT, name)),
                                key=lambda w: -w[0].count("/")):
        left.append(dirpath)
        os.rmdir(dirpath)
    assert not left, f"test leaked cgroups: {left}"


PROBE = ("head -c1 /dev/null && echo null-read; "
         "head -c1 /dev/zero 2>&1 >/dev/null || echo zero-read-failed; "
         "echo x >/dev/zero && echo zero-write; "
         "head -c1 /dev/urandom >/dev/null 2>&1 || echo urandom-denied")


def test_device_program_denies_and_allows(top: str) -> None:
    assert ROOT is not None
    cg = open_cgroup(f"/{top}/dev", "x", root=ROOT)
    assert cg.version == 2
    rules = (DeviceRule(allow=False),
             DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm"),
             DeviceRule(allow=True, type="c", major=1, minor=5, access="w"))
    cg.create(Resources(devices=rules))
    try:
        with parked(PROBE) as proc:
            cg.add_process(proc.pid)
            assert cg.pids() == [proc.pid]
            out = go(proc)
        lines = out.splitlines()
        assert lines[0] == "null-read"
        assert "Operation not permitted" in lines[1]  # /dev/zero for reading: EPERM
        assert lines[2:] == ["zero-read-failed", "zero-write", "urandom-denied"]
    finally:
        cg.destroy()
    assert not os.path.exists(os.path.join(ROOT, top))


def test_deny_list_program(top: str) -> None:
    assert ROOT is not None
    cg = open_cgroup(f"/{top}/deny", "x", root=ROOT)
    rules = (DeviceRule(allow=True), DeviceRule(allow=False, type="c", major=1, minor=9,
                                                access="r"))
    cg.create(Resources(devices=rules))
    try:
        with parked("head -c1 /dev/urandom >/dev/null 2>&1 || echo urandom-denied; "
                    "head -c1 /dev/zero >/dev/null && echo zero-read") as proc:
            cg.add_process(proc.pid)
            assert go(proc).split() == ["urandom-denied", "zero-read"]
    finally:
        cg.destroy()


def test_freeze_and_thaw(top: str) -> None:
    assert ROOT is not None
    cg = open_cgroup(f"/{top}/fr", "x", root=ROOT)
    cg.create(Resources())
    try:
        with parked("sleep 30") as proc:
            cg.add_process(proc.pid)
            cg.freeze()
            assert cg.is_frozen()
            cg.thaw()
            assert not cg.is_frozen()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    finally:
        cg.destroy()


def test_limit_without_its_controller_fails_cleanly(top: str) -> None:
    assert ROOT is not None
    with open(os.path.join(ROOT, "cgroup.controllers")) as f:
        if "pids" in f.read().split():
            pytest.skip("the pids controller is available here")
    cg = open_cgroup(f"/{top}/nopids", "x", root=ROOT)
    with pytest.raises(SetupFailed, match="pids"):
        cg.create(Resources(pids_limit=10))
    assert not os.path.exists(os.path.join(ROOT, top))
