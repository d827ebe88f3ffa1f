"""v1 and v2 cgroups against fake hierarchies in a tmp dir (no root): which files get which
values in which order, what create() makes, and what destroy() removes.

The fake stands in for the kernel's cgroupfs: its mkdir also makes the control files a real
cgroup directory has, its rmdir refuses a directory with children or processes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.runtime.cgroups import files, open_cgroup, restore_cgroup
from pydeskd.runtime.cgroups.v1 import V1Cgroup
from pydeskd.runtime.cgroups.v2 import V2Cgroup, cpu_weight, swap_max
from pydeskd.runtime.errors import SetupFailed, SpecError
from pydeskd.runtime.spec import CpuResources, DeviceRule, MemoryResources, Resources

V1_FILES = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712", "memory.swappiness": "60",
               "memory.oom_control": "oom_kill_disable 0"},
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max"},
    "devices": {"devices.list": "a *:* rwm", "devices.allow": "", "devices.deny": ""},
    "freezer": {"freezer.state": "THAWED"},
}
V2_FILES = {"cgroup.controllers": "", "cgroup.subtree_control": "", "cgroup.procs": "",
            "cgroup.events": "populated 0\nfrozen 0", "cgroup.freeze": "0",
            "memory.max": "max", "memory.low": "0", "memory.swap.max": "max",
            "cpu.weight": "100", "cpu.max": "max 100000", "pids.max": "max",
            "cpuset.cpus": "", "cpuset.mems": "", "io.weight": "default 100",
            "memory.high": "max", "hugetlb.2MB.max": "max"}


def _populate(path: str, contents: dict[str, str]) -> None:
    for name, value in contents.items():
        Path(path, name).write_text(value)


def fake_mkdir(path: str) -> None:
    os.mkdir(path)
    controller = next((c for c in V1_FILES if f"/{c}/" in path + "/"), None)
    if controller is not None:
        _populate(path, {"cgroup.procs": "", **V1_FILES[controller]})
    else:
        _populate(path, V2_FILES)
        parent = os.path.dirname(path)
        # A child sees the controllers its parent enabled for it.
        enabled = Path(parent, "cgroup.subtree_control").read_text()
        Path(path, "cgroup.controllers").write_text(enabled.replace("+", ""))


def fake_rmdir(path: str) -> None:
    entries = os.listdir(path)
    if any(os.path.isdir(os.path.join(path, e)) for e in entries):
        raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), path)
    if Path(path, "cgroup.procs").read_text().strip():
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
    for entry in entries:
        os.unlink(os.path.join(path, entry))
    os.rmdir(path)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """Every cgroup write as (last directory name, file, value), in order."""
    log: list[tuple[str, str, str]] = []
    real = files.write

    def recording(directory: str, name: str, value: str) -> None:
        before = Path(directory, name).read_text() if name == "cgroup.subtree_control" else ""
        real(directory, name, value)
        log.append((os.path.basename(directory), name, value))
        if name == "cgroup.subtree_control":  # as the kernel: children see what is enabled
            enabled = " ".join([*before.split(), *(v[1:] for v in value.split())])
            Path(directory, name).write_text(enabled)
            for child in os.scandir(directory):
                if child.is_dir():
                    Path(child.path, "cgroup.controllers").write_text(enabled)

    monkeypatch.setattr(files, "write", recording)
    return log


@pytest.fixture
def v1root(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fake v1 hierarchy set; returns (root, mountinfo text)."""
    root = str(tmp_path / "cg")
    lines = []
    for i, controller in enumerate(V1_FILES):
        mount = os.path.join(root, controller)
        os.makedirs(mount)
        _populate(mount, {"cgroup.procs": "1\n", **V1_FILES[controller]})
        lines.append(f"{40 + i} 31 0:{i} / {mount} rw - cgroup cgroup rw,{controller}")
    Path(root, "cpuset", "cpuset.cpus").write_text("0-3")
    Path(root, "cpuset", "cpuset.mems").write_text("0")
    yield root, "\n".join(lines) + "\n"


def v1(v1root: tuple[str, str], path: str, cid: str = "c1") -> V1Cgroup:
    root, mountinfo = v1root
    cg = open_cgroup(path, cid, root, mountinfo=mountinfo, self_cgroup="0::/\n")
    assert isinstance(cg, V1Cgroup)
    cg.mkdir, cg.rmdir = fake_mkdir, fake_rmdir  # type: ignore[method-assign]
    return cg


def test_v1_memory_and_swap_order(v1root: tuple[str, str],
                                  writes: list[tuple[str, str, str]]) -> None:
    cg = v1(v1root, "/p/c")
    cg.create(Resources(memory=MemoryResources(limit=100, swap=200, reservation=50,
                                               swappiness=0, disable_oom_killer=True)))
    # memsw first: the current limit (huge) is above the new memsw, so limit goes first.
    assert [w for w in writes if w[0] == "c" and w[1].startswith("memory")] == [
        ("c", "memory.limit_in_bytes", "100"), ("c", "memory.memsw.limit_in_bytes", "200"),
        ("c", "memory.soft_limit_in_bytes", "50"), ("c", "memory.oom_control", "1"),
        ("c", "memory.swappiness", "0")]
    cg.destroy()


def test_v1_unlimited_memory_means_unlimited_swap(v1root: tuple[str, str],
                                                  writes: list[tuple[str, str, str]]) -> None:
    cg = v1(v1root, "/u")
    cg.create(Resources(memory=MemoryResources(limit=-1)))
    assert [w for w in writes if w[1].startswith("memory")] == [
                      ("u", "memory.memsw.limit_in_bytes", "-1"),
                      ("u", "memory.limit_in_bytes", "-1")]
    cg.destroy()


def test_v1_cpu_cpuset_pids(v1root: tuple[str, str],
                            writes: list[tuple[str, str, str]]) -> None:
    root, _ = v1root
    cg = v1(v1root, "/a/b")
    cg.create(Resources(cpu=CpuResources(shares=512, quota=20000, period=50000, cpus="1",
                                         mems="0"), pids_limit=-1))
    assert ("b", "cpu.shares", "512") in writes
    assert writes.index(("b", "cpu.cfs_period_us", "50000")) < \
        writes.index(("b", "cpu.cfs_quota_us", "20000"))
    # cpuset inheritance walks down the new parents before the leaf's own values.
    cpuset = [w for w in writes if w[1].startswith("cpuset")]
    assert cpuset == [("a", "cpuset.cpus", "0-3"), ("a", "cpuset.mems", "0"),
                      ("b", "cpuset.cpus", "0-3"), ("b", "cpuset.mems", "0"),
                      ("b", "cpuset.cpus", "1"), ("b", "cpuset.mems", "0")]
    assert ("b", "pids.max", "max") in writes
    cg.destroy()
    assert sorted(os.listdir(os.path.join(root, "cpu"))) == sorted([*V1_FILES["cpu"],
                                                                     "cgroup.procs"])


def test_v1_devices_are_written_as_policy(v1root: tuple[str, str],
                                          writes: list[tuple[str, str, str]]) -> None:
    cg = v1(v1root, "/d")
    cg.create(Resources(devices=(DeviceRule(allow=False),
                                 DeviceRule(allow=True, type="c", major=1, minor=3),
                                 DeviceRule(allow=True, type="c", major=1, minor=3, access="r"),
                                 DeviceRule(allow=False, type="c", major=10, minor=200))))
    assert [w for w in writes if w[1].startswith("devices")] == [
        ("d", "devices.deny", "a"), ("d", "devices.allow", "c 1:3 rwm")]
    cg.destroy()


def test_v1_blacklist_does_not_rewrite_allow_all(v1root: tuple[str, str],
                                                 writes: list[tuple[str, str, str]]) -> None:
    cg = v1(v1root, "/d2")
    cg.create(Resources(devices=(DeviceRule(allow=True),
                                 DeviceRule(allow=False, type="b", major=8, minor=None))))
    assert [w for w in writes if w[1].startswith("devices")] == [
        ("d2", "devices.deny", "b 8:* rwm")]
    cg.destroy()


def test_v1_destroy_removes_made_parents_only(v1root: tuple[str, str]) -> None:
    root, _ = v1root
    fake_mkdir(os.path.join(root, "pids", "pre"))  # an existing parent that is not ours
    cg = v1(v1root, "/pre/mine/leaf")
    cg.create(Resources(pids_limit=5))
    assert os.path.isdir(os.path.join(root, "memory", "pre", "mine", "leaf"))
    again = restore_cgroup(cg.to_state())
    assert isinstance(again, V1Cgroup)
    again.rmdir = fake_rmdir  # type: ignore[method-assign]
    again.destroy()
    for controller in V1_FILES:
        expected = controller == "pids"
        assert os.path.isdir(os.path.join(root, controller, "pre")) == expected, controller
    assert not os.path.exists(os.path.join(root, "pids", "pre", "mine"))
    cg.destroy()  # idempotent


def test_v1_default_parent_is_shared_between_containers(v1root: tuple[str, str]) -> None:
    root, _ = v1root
    first, second = v1(v1root, "", "one"), v1(v1root, "", "two")
    first.create(Resources())
    second.create(Resources())  # did not make /pydesk, but /pydesk is pydesk's
    first.destroy()
    assert os.path.isdir(os.path.join(root, "freezer", "pydesk", "two"))
    second.destroy()
    assert not os.path.exists(os.path.join(root, "freezer", "pydesk"))


def test_v1_busy_cgroup_is_reported(v1root: tuple[str, str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = v1root
    monkeypatch.setattr(files, "REMOVE_TIMEOUT", 0.05)
    cg = v1(v1root, "/busy")
    cg.create(Resources())
    Path(root, "pids", "busy", "cgroup.procs").write_text("4242\n")
    assert cg.pids() == [4242]
    with pytest.raises(Exception, match="still in use"):
        cg.destroy()
    Path(root, "pids", "busy", "cgroup.procs").write_text("")
    cg.destroy()
    assert not os.path.exists(os.path.join(root, "pids", "busy"))


def test_v1_failure_removes_everything(v1root: tuple[str, str]) -> None:
    root, _ = v1root
    os.unlink(os.path.join(root, "pids", "pids.max"))  # mkdir copies from V1_FILES; break it
    cg = v1(v1root, "/x/y")
    cg.mkdir = lambda p: (fake_mkdir(p), p.endswith("/pids/x/y") and  # type: ignore[method-assign]
                          os.unlink(os.path.join(p, "pids.max")))[0]
    with pytest.raises(SetupFailed, match=r"pids\.max"):
        cg.create(Resources(pids_limit=3))
    for controller in V1_FILES:
        assert not os.path.exists(os.path.join(root, controller, "x")), controller


def test_v1_rejects_what_it_cannot_do(v1root: tuple[str, str]) -> None:
    root, mountinfo = v1root
    with pytest.raises(SpecError, match="unified"):
        v1(v1root, "/z").create(Resources(unified=(("memory.high", "1"),)))
    with pytest.raises(SpecError, match="swappiness"):
        v1(v1root, "/z").create(Resources(memory=MemoryResources(swappiness=101)))
    only_memory = "\n".join(line for line in mountinfo.splitlines() if "memory" in line)
    cg = open_cgroup("/z", "c", root, mountinfo=only_memory, self_cgroup="0::/\n")
    with pytest.raises(SetupFailed, match="pids controller"):
        cg.create(Resources(pids_limit=3))
    assert not os.path.exists(os.path.join(root, "memory", "z"))


def test_v1_freeze_and_thaw(v1root: tuple[str, str]) -> None:
    cg = v1(v1root, "/f")
    cg.create(Resources())
    cg.freeze()
    assert cg.is_frozen()
    cg.thaw()
    assert not cg.is_frozen()
    cg.destroy()


# --- v2 ----------------------------------------------------------------------------------------


@pytest.fixture
def v2root(tmp_path: Path) -> tuple[str, str]:
    root = str(tmp_path / "unified")
    os.makedirs(root)
    _populate(root, {**V2_FILES, "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma"})
    return root, f"30 22 0:26 / {root} rw - cgroup2 cgroup2 rw,nsdelegate\n"


def v2(v2root: tuple[str, str], path: str, cid: str = "c1") -> V2Cgroup:
    root, mountinfo = v2root
    cg = open_cgroup(path, cid, root, mountinfo=mountinfo, self_cgroup="0::/\n")
    assert isinstance(cg, V2Cgroup)
    cg.mkdir, cg.rmdir = fake_mkdir, fake_rmdir  # type: ignore[method-assign]
    return cg


def test_conversions() -> None:
    assert cpu_weight(0) == 0
    assert cpu_weight(2) == 1
    assert cpu_weight(1024) == 39
    assert cpu_weight(262144) == 10000
    assert swap_max(0, 100) == 0
    assert swap_max(0, -1) == -1
    assert swap_max(-1, 100) == -1
    assert swap_max(300, 100) == 200
    with pytest.raises(SpecError):
        swap_max(50, 100)
    with pytest.raises(SpecError):
        swap_max(300, 0)


def test_v2_limits(v2root: tuple[str, str], writes: list[tuple[str, str, str]]) -> None:
    root, _ = v2root
    cg = v2(v2root, "", "c7")
    cg.create(Resources(memory=MemoryResources(limit=1 << 20, swap=3 << 20, reservation=1000,
                                               swappiness=30),
                        cpu=CpuResources(shares=1024, quota=-1, period=50000, cpus="0-1"),
                        pids_limit=64, unified=(("memory.high", "900000"),)))
    enable = "+cpuset +cpu +io +memory +pids"
    assert writes == [
        ("unified", "cgroup.subtree_control", enable), ("pydesk", "cgroup.subtree_control", enable),
        ("c7", "memory.swap.max", str(2 << 20)), ("c7", "memory.max", str(1 << 20)),
        ("c7", "memory.low", "1000"), ("c7", "cpu.weight", "39"), ("c7", "cpu.max", "max 50000"),
        ("c7", "cpuset.cpus", "0-1"), ("c7", "pids.max", "64"), ("c7", "memory.high", "900000")]
    cg.destroy()
    assert os.listdir(root) == os.listdir(root) and "pydesk" not in os.listdir(root)


def test_v2_swap_equal_to_limit_disables_swap(v2root: tuple[str, str],
                                              writes: list[tuple[str, str, str]]) -> None:
    cg = v2(v2root, "/s")
    cg.create(Resources(memory=MemoryResources(limit=1 << 20, swap=1 << 20)))
    assert [w for w in writes if w[1].startswith("memory")] == [
        ("s", "memory.swap.max", "0"), ("s", "memory.max", str(1 << 20))]
    cg.destroy()
    writes.clear()
    cg = v2(v2root, "/t")
    cg.create(Resources(memory=MemoryResources(limit=1 << 20)))
    assert [w for w in writes if w[1].startswith("memory")] == [
        ("t", "memory.max", str(1 << 20))]
    cg.destroy()


def test_v2_cpu_max_forms(v2root: tuple[str, str], writes: list[tuple[str, str, str]]) -> None:
    for i, (quota, period, expected) in enumerate(
            [(25000, 0, "25000"), (25000, 100000, "25000 100000"), (0, 20000, "max 20000")]):
        cg = v2(v2root, f"/q{i}")
        cg.create(Resources(cpu=CpuResources(quota=quota, period=period)))
        assert writes[-1] == (f"q{i}", "cpu.max", expected)
        cg.destroy()


def test_v2_enables_controllers_only_when_missing(v2root: tuple[str, str],
                                                  writes: list[tuple[str, str, str]]) -> None:
    root, _ = v2root
    Path(root, "cgroup.subtree_control").write_text("cpuset cpu io memory pids")
    cg = v2(v2root, "/one")
    cg.create(Resources(unified=(("hugetlb.2MB.max", "0"),)))
    assert writes[0] == ("unified", "cgroup.subtree_control", "+hugetlb")
    cg.destroy()


def test_v2_missing_controller_fails_cleanly(v2root: tuple[str, str]) -> None:
    root, _ = v2root
    Path(root, "cgroup.controllers").write_text("cpu")
    cg = v2(v2root, "/np/c")

    def mkdir_without_pids(path: str) -> None:
        fake_mkdir(path)
        os.unlink(os.path.join(path, "pids.max"))

    cg.mkdir = mkdir_without_pids  # type: ignore[method-assign]
    with pytest.raises(SetupFailed, match="pids controller"):
        cg.create(Resources(pids_limit=10))
    assert not os.path.exists(os.path.join(root, "np"))


def test_v2_bad_unified_keys(v2root: tuple[str, str]) -> None:
    for key in ("../escape", "noperiod", ".hidden"):
        with pytest.raises(SpecError):
            v2(v2root, "/k").create(Resources(unified=((key, "1"),)))


def test_v2_freeze_waits_for_events(v2root: tuple[str, str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = v2root
    cg = v2(v2root, "/fz")
    cg.create(Resources())
    events = Path(root, "fz", "cgroup.events")
    real = files.write

    def kernel(directory: str, name: str, value: str) -> None:
        real(directory, name, value)
        if name == "cgroup.freeze":
            events.write_text(f"populated 1\nfrozen {value}\n")

    monkeypatch.setattr(files, "write", kernel)
    cg.freeze()
    assert cg.is_frozen()
    cg.thaw()
    assert not cg.is_frozen()
    cg.destroy()


def test_v1_destroy_keeps_a_leaf_that_existed_before(v1root: tuple[str, str]) -> None:
    root, _ = v1root
    fake_mkdir(os.path.join(root, "pids", "theirs"))  # someone else's cgroup, in one hierarchy
    cg = v1(v1root, "/theirs")
    cg.create(Resources())
    restored = restore_cgroup(cg.to_state())
    assert isinstance(restored, V1Cgroup)
    restored.rmdir = fake_rmdir  # type: ignore[method-assign]
    restored.destroy()
    assert os.path.isdir(os.path.join(root, "pids", "theirs"))
    assert not os.path.exists(os.path.join(root, "memory", "theirs"))


def test_v2_destroy_keeps_a_leaf_that_existed_before(v2root: tuple[str, str]) -> None:
    root, _ = v2root
    fake_mkdir(os.path.join(root, "theirs"))
    cg = v2(v2root, "/theirs")
    cg.create(Resources())
    cg.destroy()
    assert os.path.isdir(os.path.join(root, "theirs"))
