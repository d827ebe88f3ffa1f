"""Layout detection and path resolution from fake mountinfo and /proc/self/cgroup text."""

from __future__ import annotations

import pytest

from pydeskd.runtime.cgroups import Hierarchy, host_hierarchies, open_cgroup, restore_cgroup
from pydeskd.runtime.cgroups.layout import detect_layout, own_cgroups, parse_mountinfo
from pydeskd.runtime.cgroups.v1 import V1Cgroup
from pydeskd.runtime.cgroups.v2 import V2Cgroup
from pydeskd.runtime.errors import SetupFailed, SpecError

# This host's layout (hybrid): v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified.
HYBRID = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_SELF = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/1b10
1:cpu:/
0::/
"""
UNIFIED = ("22 1 0:21 / / rw - ext4 /dev/vda rw\n"
           "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 "
           "cgroup2 rw,nsdelegate,memory_recursiveprot\n")
# Debian-style v1 with co-mounted controllers.
COMOUNTED = """\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""


def test_hybrid_is_v1_with_every_controller() -> None:
    layout = detect_layout("/sys/fs/cgroup", HYBRID)
    assert layout.version == 1
    assert layout.hybrid is not None
    assert layout.hybrid.mountpoint == "/sys/fs/cgroup/unified"
    assert detect_layout("/sys/fs/cgroup", COMOUNTED).hybrid is None
    controllers = [c for m in layout.mounts for c in m.controllers]
    assert sorted(controllers) == ["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer",
                                   "memory", "name=systemd", "pids"]


def test_cgroup2_at_the_root_is_unified() -> None:
    layout = detect_layout("/sys/fs/cgroup/", UNIFIED)
    assert layout.version == 2
    assert layout.mounts[0].super_options == ("nsdelegate", "memory_recursiveprot")
    # The hybrid's cgroup2, asked for directly, is unified too (the eBPF root test uses it).
    assert detect_layout("/sys/fs/cgroup/unified", HYBRID).version == 2


def test_nothing_mounted_is_an_error() -> None:
    with pytest.raises(SetupFailed, match="no cgroup"):
        detect_layout("/sys/fs/cgroup", "22 1 0:21 / / rw - ext4 /dev/vda rw\n")


def test_mountinfo_escapes_and_overmounts() -> None:
    text = ("1 0 0:1 / /cg/with\\040space rw - cgroup cgroup rw,memory\n"
            "2 0 0:2 / /cg/x rw shared:1 master:2 - cgroup cgroup rw,pids\n"
            "3 0 0:3 / /cg/x rw - tmpfs tmpfs rw\n")
    mounts = parse_mountinfo(text)
    assert [m.mountpoint for m in mounts] == ["/cg/with space", "/cg/x"]
    assert mounts[1].controllers == ("pids",)


def test_own_cgroups() -> None:
    own = own_cgroups(HYBRID_SELF + "3:cpu,cpuacct:/a\n")
    assert own["memory"] == "/process_api/1b10"
    assert own["name=systemd"] == "/"
    assert own[""] == "/"
    assert own["cpuacct"] == "/a"


def _v1(path: str, cid: str = "c1", mountinfo: str = HYBRID) -> V1Cgroup:
    cg = open_cgroup(path, cid, mountinfo=mountinfo, self_cgroup=HYBRID_SELF)
    assert isinstance(cg, V1Cgroup)
    return cg


def test_default_path_is_pydesk_id_in_every_hierarchy() -> None:
    cg = _v1("")
    assert cg.dirs["memory"] == "/sys/fs/cgroup/memory/pydesk/c1"
    assert cg.dirs["name=systemd"] == "/sys/fs/cgroup/systemd/pydesk/c1"
    assert len(cg.dirs) == 10
    assert cg.dirs[""] == "/sys/fs/cgroup/unified/pydesk/c1"  # hybrid: joined, as runc 1.1
    assert cg.default_parents == ("/pydesk",)


def test_absolute_path_ignores_our_own_nested_cgroup() -> None:
    cg = _v1("/a/b/")
    assert cg.dirs["memory"] == "/sys/fs/cgroup/memory/a/b"
    assert cg.bases["memory"] == "/sys/fs/cgroup/memory"
    assert cg.default_parents == ()


def test_relative_path_is_below_our_own_cgroup() -> None:
    cg = _v1("a/b")
    assert cg.dirs["memory"] == "/sys/fs/cgroup/memory/process_api/1b10/a/b"
    assert cg.bases["memory"] == "/sys/fs/cgroup/memory/process_api/1b10"
    assert cg.dirs["pids"] == "/sys/fs/cgroup/pids/a/b"
    assert cg.dirs[""] == "/sys/fs/cgroup/unified/a/b"


def test_relative_path_inside_a_cgroup_namespace() -> None:
    # Mounted from inside a cgroupns: the mount's root is the namespace's root.
    text = "35 31 0:32 /process_api /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    cg = open_cgroup("x", "c", mountinfo=text, self_cgroup="4:memory:/process_api/1b10\n")
    assert isinstance(cg, V1Cgroup)
    assert cg.dirs["memory"] == "/sys/fs/cgroup/memory/1b10/x"


def test_comounted_controllers_share_one_directory() -> None:
    cg = _v1("/p", mountinfo=COMOUNTED)
    assert cg.dirs["cpu"] == cg.dirs["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/p"
    assert cg.leaves() == ["/sys/fs/cgroup/cpu,cpuacct/p", "/sys/fs/cgroup/memory/p",
                           "/sys/fs/cgroup/net_cls,net_prio/p"]


@pytest.mark.parametrize("bad", ["system.slice:docker:abc", "/a/../b", "./x"])
def test_unusable_paths_are_spec_errors(bad: str) -> None:
    with pytest.raises(SpecError):
        open_cgroup(bad, "c", mountinfo=HYBRID, self_cgroup=HYBRID_SELF)


def test_systemd_paths_are_named_as_unsupported() -> None:
    with pytest.raises(SpecError, match="systemd cgroup paths are not supported"):
        open_cgroup("system.slice:docker:abc", "c", mountinfo=HYBRID, self_cgroup=HYBRID_SELF)


def test_bad_container_id_for_the_default_path() -> None:
    with pytest.raises(SpecError):
        open_cgroup("", "../x", mountinfo=HYBRID, self_cgroup=HYBRID_SELF)


def test_v2_paths() -> None:
    cg = open_cgroup("", "c9", mountinfo=UNIFIED, self_cgroup="0::/user.slice/session-1\n")
    assert isinstance(cg, V2Cgroup)
    assert cg.leaf == "/sys/fs/cgroup/pydesk/c9"
    assert cg.owned_parents == ("/sys/fs/cgroup/pydesk",)
    rel = open_cgroup("k/c", "c9", mountinfo=UNIFIED, self_cgroup="0::/user.slice/session-1\n")
    assert isinstance(rel, V2Cgroup)
    assert rel.leaf == "/sys/fs/cgroup/user.slice/session-1/k/c"


def test_state_round_trip() -> None:
    for cg in (_v1("/a/b"), open_cgroup("", "c", mountinfo=UNIFIED, self_cgroup="0::/\n")):
        again = restore_cgroup(cg.to_state())
        assert type(again) is type(cg)
        assert again.to_state() == cg.to_state()
    with pytest.raises(SetupFailed):
        restore_cgroup({"version": 3})
    with pytest.raises(SetupFailed):
        restore_cgroup({"version": 1, "dirs": "nope"})


def test_host_hierarchies_for_the_container_mount() -> None:
    hybrid = host_hierarchies(mountinfo=HYBRID)
    assert Hierarchy("memory", "/sys/fs/cgroup/memory", 1, ("memory",)) in hybrid
    assert Hierarchy("systemd", "/sys/fs/cgroup/systemd", 1, ("name=systemd",)) in hybrid
    assert all(h.version == 1 for h in hybrid)  # the hybrid cgroup2 is left out, as runc
    assert Hierarchy("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct", 1, ("cpu", "cpuacct")) in \
        host_hierarchies(mountinfo=COMOUNTED)
    assert host_hierarchies(mountinfo=UNIFIED) == [
        Hierarchy("", "/sys/fs/cgroup", 2, ("nsdelegate", "memory_recursiveprot"))]
