"""One lifecycle suite that every Cgroup implementation available on this host runs for real:
v1 (the host's layout) and v2 (the host's cgroup2: the hybrid one at /sys/fs/cgroup/unified
here, /sys/fs/cgroup on a pure v2 host)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from pydeskd.runtime.cgroups import Cgroup, open_cgroup, restore_cgroup
from pydeskd.runtime.cgroups.layout import detect_layout, parse_mountinfo
from pydeskd.runtime.spec import Resources
from tests.integration.runtime_parts.cgroup_fixtures import leftovers, sweep, unique


def _roots() -> list[str]:
    roots = []
    if detect_layout().version == 1:
        roots.append("/sys/fs/cgroup")
    with open("/proc/self/mountinfo") as f:
        for m in parse_mountinfo(f.read()):
            if m.fstype == "cgroup2" and m.mountpoint.startswith("/sys/fs/cgroup"):
                roots.append(m.mountpoint)
    return roots


@pytest.fixture(params=_roots())
def made(request: pytest.FixtureRequest) -> Iterator[tuple[Cgroup, str]]:
    top = unique()
    cg = open_cgroup(f"/{top}/leaf", "x", root=request.param)
    cg.create(Resources())
    yield cg, top
    try:
        cg.destroy()
    finally:
        left = sweep(top)
        assert not left, f"leaked: {left}"


def test_lifecycle(made: tuple[Cgroup, str]) -> None:
    cg, top = made
    assert cg.pids() == []
    proc = subprocess.Popen(["sleep", "30"])
    try:
        cg.add_process(proc.pid)
        assert cg.pids() == [proc.pid]
        cg.freeze()
        assert cg.is_frozen()
        cg.freeze()  # freezing a frozen cgroup is fine
        cg.thaw()
        assert not cg.is_frozen()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    restored = restore_cgroup(cg.to_state())
    assert restored.version == cg.version
    assert restored.pids() == []
    restored.destroy()
    assert leftovers(top) == []
    restored.destroy()
    cg.destroy()


def test_destroy_removes_cgroups_the_container_made_inside(made: tuple[Cgroup, str]) -> None:
    cg, top = made
    # What a container with a cgroup namespace (systemd, docker-in-docker) may do.
    for hierarchy_dir in leftovers(top):
        os.makedirs(os.path.join(hierarchy_dir, "leaf", "inner", "deeper"))
    cg.destroy()
    assert leftovers(top) == []


def test_killed_processes_are_waited_for(made: tuple[Cgroup, str]) -> None:
    cg, top = made
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        for proc in procs:
            cg.add_process(proc.pid)
        for proc in procs:
            proc.kill()
        cg.destroy()  # must wait out the exits, not fail with EBUSY
    finally:
        for proc in procs:
            proc.wait(timeout=10)
    assert leftovers(top) == []
