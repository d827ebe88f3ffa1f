"""The rootfs plan: mount options decoded as runc does, and the mount(2) calls made in order
(recorded with RecordingSyscalls, on a real directory tree, without root)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.runtime import rootfs
from pydeskd.runtime import syscalls as sc
from pydeskd.runtime.rootfs import CgroupView, parse_options, plan_mount
from pydeskd.runtime.spec import Mount, parse_spec
from pydeskd.runtime.syscalls import RecordingSyscalls
from tests.support.busybox import base_config


def mounts(calls: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [c for c in calls if c[0] == "mount"]


def test_parse_options_flags_propagation_and_data() -> None:
    flags, propagation, data = parse_options(
        ("nosuid", "noexec", "ro", "rslave", "mode=755", "size=64k", "tmpcopyup"))
    assert flags == sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_RDONLY
    assert propagation == (sc.MS_SLAVE | sc.MS_REC,)
    assert data == "mode=755,size=64k"


def test_later_options_clear_earlier_ones() -> None:
    flags, _, _ = parse_options(("ro", "rw", "nosuid", "suid", "nodev"))
    assert flags == sc.MS_NODEV


def test_bind_type_and_rbind_option_make_bind_steps() -> None:
    assert plan_mount(Mount("/x", "bind", "/src")).flags == sc.MS_BIND
    step = plan_mount(Mount("/x/", "none", "/src", ("rbind", "ro")))
    assert step.is_bind and step.flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY
    assert step.destination == "/x"


def test_root_propagation_defaults_to_rslave() -> None:
    spec = parse_spec(base_config())
    assert rootfs.root_propagation(spec) == sc.MS_SLAVE | sc.MS_REC
    config = base_config()
    config["linux"]["rootfsPropagation"] = "private"
    assert rootfs.root_propagation(parse_spec(config)) == sc.MS_PRIVATE


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    root = tmp_path / "rootfs"
    for d in ("proc", "dev", "sys", "etc"):
        (root / d).mkdir(parents=True)
    source = tmp_path / "data"
    source.mkdir()
    (tmp_path / "file.txt").write_text("x")
    cwd = os.getcwd()
    yield root, tmp_path
    os.chdir(cwd)


def prepare(root: Path, config: dict[str, Any], view: CgroupView | None = None
            ) -> list[tuple[object, ...]]:
    sys = RecordingSyscalls()
    rootfs.prepare(sys, parse_spec(config), str(root), view, make_devices=False)
    return sys.calls


def test_prepare_starts_with_rslave_root_and_rootfs_self_bind(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    config = base_config()
    config["mounts"] = []
    calls = prepare(root, config)
    assert calls[0] == ("mount", "", "/", "", sc.MS_SLAVE | sc.MS_REC, "")
    assert calls[1] == ("mount", str(root), str(root), "bind", sc.MS_BIND | sc.MS_REC, "")


def test_spec_mounts_in_order_with_remounts(tree: tuple[Path, Path]) -> None:
    root, tmp = tree
    config = base_config()
    config["mounts"] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/data", "type": "bind", "source": str(tmp / "data"),
         "options": ["rbind", "ro", "rprivate"]},
        {"destination": "/etc/file.txt", "type": "bind", "source": str(tmp / "file.txt"),
         "options": ["bind"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["ro", "nosuid", "size=1m"]},
    ]
    calls = mounts(prepare(root, config))[2:]
    data = str(root / "data")
    scratch = str(root / "scratch")
    assert calls == [
        ("mount", "proc", str(root / "proc"), "proc", 0, ""),
        ("mount", str(tmp / "data"), data, "bind", sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY, ""),
        ("mount", "", data, "", sc.MS_PRIVATE | sc.MS_REC, ""),
        ("mount", str(tmp / "data"), data, "bind",
         sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_REMOUNT, ""),
        ("mount", str(tmp / "file.txt"), str(root / "etc/file.txt"), "bind", sc.MS_BIND, ""),
        ("mount", "tmpfs", scratch, "tmpfs", sc.MS_NOSUID, "size=1m"),
        ("mount", "tmpfs", scratch, "tmpfs", sc.MS_NOSUID | sc.MS_RDONLY | sc.MS_REMOUNT,
         "size=1m"),
    ]
    # Mount points were made: a directory for a directory, an empty file for a file.
    assert (root / "data").is_dir() and (root / "etc/file.txt").is_file()


def test_destination_through_symlink_stays_in_rootfs(tree: tuple[Path, Path]) -> None:
    root, tmp = tree
    (root / "evil").symlink_to("/" + str(tmp / "outside").lstrip("/"))
    config = base_config()
    config["mounts"] = [{"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"}]
    calls = mounts(prepare(root, config))
    target = calls[-1][2]
    assert isinstance(target, str) and target.startswith(str(root) + "/")
    assert not (tmp / "outside").exists()


def test_missing_bind_source_fails_naming_the_mount(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    config = base_config()
    config["mounts"] = [{"destination": "/x", "type": "bind", "source": "/no/such/dir"}]
    from pydeskd.runtime.errors import SetupFailed

    with pytest.raises(SetupFailed, match="/no/such/dir on /x"):
        prepare(root, config)


def test_cgroup_v1_without_namespace_binds_the_container_cgroup(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    config = base_config()
    config["mounts"] = [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}]
    view = CgroupView(1, False, (("cpu,cpuacct", "cpu,cpuacct", "/h/cpu,cpuacct/c1"),
                                 ("memory", "memory", "/h/memory/c1")))
    calls = mounts(prepare(root, config, view))[2:]
    base = str(root / "sys/fs/cgroup")
    flags = rootfs.CGROUP_FLAGS | sc.MS_RDONLY | sc.MS_BIND | sc.MS_REC
    assert calls == [
        ("mount", "tmpfs", base, "tmpfs", rootfs.CGROUP_FLAGS, "mode=755"),
        ("mount", "/h/cpu,cpuacct/c1", base + "/cpu,cpuacct", "bind", flags, ""),
        ("mount", "/h/cpu,cpuacct/c1", base + "/cpu,cpuacct", "bind", flags | sc.MS_REMOUNT, ""),
        ("mount", "/h/memory/c1", base + "/memory", "bind", flags, ""),
        ("mount", "/h/memory/c1", base + "/memory", "bind", flags | sc.MS_REMOUNT, ""),
    ]
    assert os.readlink(root / "sys/fs/cgroup/cpu") == "cpu,cpuacct"


def test_cgroup_v1_in_a_cgroup_namespace_mounts_each_hierarchy(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    config = base_config()
    config["mounts"] = [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}]
    view = CgroupView(1, True, (("pids", "pids", "/h/pids/c1"),))
    calls = mounts(prepare(root, config, view))[2:]
    assert calls[1] == ("mount", "cgroup", str(root / "sys/fs/cgroup/pids"), "cgroup",
                        rootfs.CGROUP_FLAGS, "pids")


def test_cgroup_v2_mounts_cgroup2(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    config = base_config()
    config["mounts"] = [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                         "options": ["ro"]}]
    calls = mounts(prepare(root, config, CgroupView(2, True, (), "/sys/fs/cgroup/c1")))[2:]
    assert calls == [("mount", "cgroup", str(root / "sys/fs/cgroup"), "cgroup2",
                      sc.MS_RDONLY, "")]


class FailingMounts(RecordingSyscalls):
    """Raises the given errno for bind mounts onto given targets, records the rest."""

    def __init__(self, failures: dict[str, int]) -> None:
        super().__init__()
        self.failures = failures

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        if target in self.failures and flags & sc.MS_BIND and not flags & sc.MS_REMOUNT:
            raise OSError(self.failures[target], os.strerror(self.failures[target]))
        super().mount(source, target, fstype, flags, data)


def test_masked_paths_file_dir_and_missing() -> None:
    sys = FailingMounts({"/proc/missing": 2, "/proc/acpi": 20})
    for path in ("/proc/kcore", "/proc/acpi", "/proc/missing"):
        rootfs.mask_path(sys, path)
    assert sys.calls == [
        ("mount", "/dev/null", "/proc/kcore", "", sc.MS_BIND, ""),
        ("mount", "tmpfs", "/proc/acpi", "tmpfs", sc.MS_RDONLY, ""),
    ]


def test_readonly_paths_bind_then_remount_ro() -> None:
    sys = FailingMounts({"/proc/gone": 2})
    rootfs.readonly_path(sys, "/proc/sys")
    rootfs.readonly_path(sys, "/proc/gone")
    assert sys.calls == [
        ("mount", "/proc/sys", "/proc/sys", "", sc.MS_BIND | sc.MS_REC, ""),
        ("mount", "/proc/sys", "/proc/sys", "",
         sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC, ""),
    ]


def test_pivot_root_dot_dot_then_detach_old_root(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    sys = RecordingSyscalls()
    rootfs.pivot(sys, str(root), no_pivot=False)
    assert sys.calls == [
        ("pivot_root", ".", "."),
        ("mount", "", ".", "", sc.MS_SLAVE | sc.MS_REC, ""),
        ("umount2", ".", sc.MNT_DETACH),
    ]


def test_finalize_then_protect_paths() -> None:
    config = base_config()
    config["root"]["readonly"] = True
    config["linux"]["readonlyPaths"] = ["/proc/sys"]
    config["linux"]["maskedPaths"] = ["/proc/kcore"]
    sys = RecordingSyscalls()
    rootfs.finalize(sys, parse_spec(config))
    rootfs.protect_paths(sys, parse_spec(config))
    targets = [(c[2], c[4]) for c in mounts(sys.calls)]
    assert targets == [
        ("/", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY),
        ("/proc/sys", sc.MS_BIND | sc.MS_REC),
        ("/proc/sys", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC),
        ("/proc/kcore", sc.MS_BIND),
    ]


def test_tmpfs_over_an_existing_directory_keeps_its_mode(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    (root / "tmp").mkdir(mode=0o755)
    (root / "tmp").chmod(0o1777)
    config = base_config()
    config["mounts"] = [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                         "options": ["mode=755"]}]
    prepare(root, config)  # the mount is only recorded: the chmod lands on the directory
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777


def test_named_v1_hierarchy_in_a_cgroup_namespace_uses_its_name(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    config = base_config()
    config["mounts"] = [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}]
    view = CgroupView(1, True, (("systemd", "name=systemd", "/h/systemd/c1"),))
    calls = mounts(prepare(root, config, view))[2:]
    assert calls[1] == ("mount", "systemd", str(root / "sys/fs/cgroup/systemd"), "cgroup",
                        rootfs.CGROUP_FLAGS, "name=systemd")


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /tmp/b\\040d rw,relatime shared:7 - tmpfs x rw
41 22 0:41 / /tmp/bdx rw,relatime - tmpfs y rw
42 40 0:42 / /tmp/b\\040d/in rw,relatime master:3 - tmpfs z rw
"""


def test_parent_mount_is_the_longest_mount_point_holding_the_path() -> None:
    assert rootfs.parent_mount("/tmp/b d/bundle/rootfs", MOUNTINFO) == ("/tmp/b d", True)
    assert rootfs.parent_mount("/tmp/bdx/rootfs", MOUNTINFO) == ("/tmp/bdx", False)
    assert rootfs.parent_mount("/tmp/b d/in/r", MOUNTINFO) == ("/tmp/b d/in", False)
    assert rootfs.parent_mount("/srv/rootfs", MOUNTINFO) == ("/", True)


def test_a_shared_parent_mount_is_made_private_and_no_other() -> None:
    sys = RecordingSyscalls()
    rootfs.make_parent_private(sys, "/tmp/b d/bundle/rootfs", MOUNTINFO)
    assert sys.calls == [("mount", "", "/tmp/b d", "", sc.MS_PRIVATE, "")]
    sys = RecordingSyscalls()
    rootfs.make_parent_private(sys, "/tmp/bdx/rootfs", MOUNTINFO)
    assert sys.calls == []
