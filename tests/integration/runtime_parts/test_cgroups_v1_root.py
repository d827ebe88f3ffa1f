"""cgroup v1 on this host, for real: directories, limits, membership, freezer, cleanup."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Iterator

import pytest

from pydeskd.runtime.cgroups import Cgroup, open_cgroup, restore_cgroup
from pydeskd.runtime.cgroups.layout import detect_layout
from pydeskd.runtime.errors import SetupFailed
from pydeskd.runtime.spec import CpuResources, DeviceRule, MemoryResources, Resources
from tests.integration.runtime_parts.cgroup_fixtures import go, leftovers, parked, sweep, unique

pytestmark = pytest.mark.skipif(detect_layout().version != 1, reason="needs a cgroup v1 host")

MEMORY = "/sys/fs/cgroup/memory"
FORK_LOOP = """
import os, signal, time
kids = []
for _ in range(10):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(10)
        os._exit(0)
    kids.append(pid)
print(len(kids))
for kid in kids:
    os.kill(kid, signal.SIGKILL)
    os.waitpid(kid, 0)
"""


@pytest.fixture
def top() -> Iterator[str]:
    name = unique()
    yield name
    left = sweep(name)
    assert not left, f"test leaked cgroups: {left}"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def test_limits_are_written_and_everything_is_removed(top: str) -> None:
    cg = open_cgroup(f"/{top}/c1", "ignored")
    res = Resources(memory=MemoryResources(limit=64 << 20, swap=96 << 20, reservation=32 << 20,
                                           swappiness=10),
                    cpu=CpuResources(shares=512, quota=50000, period=100000, cpus="0"),
                    pids_limit=42)
    cg.create(res)
    try:
        assert _read(f"{MEMORY}/{top}/c1/memory.limit_in_bytes") == str(64 << 20)
        assert _read(f"{MEMORY}/{top}/c1/memory.memsw.limit_in_bytes") == str(96 << 20)
        assert _read(f"{MEMORY}/{top}/c1/memory.soft_limit_in_bytes") == str(32 << 20)
        assert _read(f"{MEMORY}/{top}/c1/memory.swappiness") == "10"
        assert _read(f"/sys/fs/cgroup/cpu/{top}/c1/cpu.shares") == "512"
        assert _read(f"/sys/fs/cgroup/cpu/{top}/c1/cpu.cfs_quota_us") == "50000"
        assert _read(f"/sys/fs/cgroup/cpu/{top}/c1/cpu.cfs_period_us") == "100000"
        assert _read(f"/sys/fs/cgroup/cpuset/{top}/c1/cpuset.cpus") == "0"
        # The new parent got the root's cpus and mems copied down, or no task could join.
        assert _read(f"/sys/fs/cgroup/cpuset/{top}/cpuset.mems") == \
            _read("/sys/fs/cgroup/cpuset/cpuset.mems")
        assert _read(f"/sys/fs/cgroup/pids/{top}/c1/pids.max") == "42"
        for hierarchy in ("freezer", "devices", "blkio", "systemd", "cpuacct", "unified"):
            assert os.path.isdir(f"/sys/fs/cgroup/{hierarchy}/{top}/c1")
    finally:
        cg.destroy()
    assert leftovers(top) == []
    cg.destroy()  # idempotent


def test_process_joins_every_hierarchy_and_freezes(top: str) -> None:
    cg = open_cgroup(f"/{top}/c", "x")
    cg.create(Resources())
    try:
        with parked("sleep 30") as proc:
            cg.add_process(proc.pid)
            assert cg.pids() == [proc.pid]
            with open(f"/proc/{proc.pid}/cgroup") as f:
                lines = f.read().splitlines()
            for line in lines:  # the hybrid cgroup2 ("0::") too, as with runc 1.1
                assert line.endswith(f"/{top}/c"), line
            cg.freeze()
            assert cg.is_frozen()
            assert _read(f"/proc/{proc.pid}/stat").split()[2] in ("D", "S", "T")
            cg.thaw()
            assert not cg.is_frozen()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    finally:
        cg.destroy()
    assert leftovers(top) == []


def test_memory_limit_oom_kills(top: str) -> None:
    cg = open_cgroup(f"/{top}/oom", "x")
    cg.create(Resources(memory=MemoryResources(limit=32 << 20, swap=32 << 20)))
    try:
        with parked("exec /usr/bin/python3 -S -c \"a = b'x' * (128 << 20); print('survived')\""
                    ) as proc:
            cg.add_process(proc.pid)
            out = go(proc)
            assert proc.returncode == -signal.SIGKILL, out
            assert "survived" not in out
    finally:
        cg.destroy()


def test_pids_limit_caps_forks(top: str) -> None:
    cg = open_cgroup(f"/{top}/pids", "x")
    cg.create(Resources(pids_limit=3))
    try:
        with parked(f"exec /usr/bin/python3 -S -c {shlex.quote(FORK_LOOP)}") as proc:
            cg.add_process(proc.pid)
            # The python process itself counts, so 2 of its 10 forks succeed.
            assert go(proc).split() == ["2"]
    finally:
        cg.destroy()


def test_device_rules_deny_and_allow(top: str) -> None:
    cg = open_cgroup(f"/{top}/dev", "x")
    rules = (DeviceRule(allow=False),
             DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm"),
             DeviceRule(allow=True, type="c", major=1, minor=5, access="w"))
    cg.create(Resources(devices=rules))
    try:
        assert _read(f"/sys/fs/cgroup/devices/{top}/dev/devices.list").splitlines() == \
            ["c 1:3 rwm", "c 1:5 w"]
        script = ("head -c1 /dev/null && echo null-ok; "
                  "head -c1 /dev/zero >/dev/null 2>&1 || echo zero-read-denied; "
                  "echo >/dev/zero && echo zero-write-ok; "
                  "head -c1 /dev/urandom >/dev/null 2>&1 || echo urandom-denied")
        with parked(script) as proc:
            cg.add_process(proc.pid)
            out = go(proc).split()
        assert out == ["null-ok", "zero-read-denied", "zero-write-ok", "urandom-denied"]
    finally:
        cg.destroy()


def test_default_path_and_restore(top: str) -> None:
    cg = open_cgroup("", top)
    cg.create(Resources(pids_limit=5))
    assert _read(f"/sys/fs/cgroup/pids/pydesk/{top}/pids.max") == "5"
    again = restore_cgroup(cg.to_state())
    assert again.version == 1
    again.destroy()
    assert not os.path.exists(f"/sys/fs/cgroup/pids/pydesk/{top}")
    # /pydesk itself goes too unless another container (a parallel test) still uses it.
    if os.path.isdir("/sys/fs/cgroup/pids/pydesk"):
        assert os.listdir("/sys/fs/cgroup/pids/pydesk") != []


def test_relative_path_is_below_our_own_cgroup(top: str) -> None:
    with open("/proc/self/cgroup") as f:
        own = {line.split(":")[1]: line.split(":")[2] for line in f.read().splitlines()}
    cg = open_cgroup(f"{top}/rel", "x")
    cg.create(Resources(memory=MemoryResources(limit=100 << 20)))
    try:
        where = os.path.normpath(f"{MEMORY}/{own['memory']}/{top}/rel")
        assert _read(f"{where}/memory.limit_in_bytes") == str(100 << 20)
    finally:
        cg.destroy()
    assert not os.path.exists(os.path.normpath(f"{MEMORY}/{own['memory']}/{top}"))


def test_failed_create_leaves_nothing(top: str) -> None:
    cg: Cgroup = open_cgroup(f"/{top}/bad", "x")
    with pytest.raises(SetupFailed, match=r"cpuset\.cpus"):
        cg.create(Resources(pids_limit=4, cpu=CpuResources(cpus="4096")))
    assert leftovers(top) == []


def test_destroy_waits_for_exiting_processes(top: str) -> None:
    cg = open_cgroup(f"/{top}/busy", "x")
    cg.create(Resources())
    proc = subprocess.Popen(["sleep", "30"])
    try:
        cg.add_process(proc.pid)
        proc.kill()  # exits asynchronously; destroy must wait for the cgroup to empty
        cg.destroy()
    finally:
        proc.wait(timeout=10)
    assert leftovers(top) == []
