"""RealHost, the spec builder's one look at the host, against the real machine (root: mknod)."""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path

import pytest

from pydeskd.daemon.ocispec import DeviceNode, RealHost


def test_device_nodes(tmp_path: Path) -> None:
    host = RealHost()
    assert host.device("/dev/null") == DeviceNode("c", "/dev/null", 1, 3, 0o666, 0, 0)
    (tmp_path / "sub").mkdir()
    (tmp_path / "pts").mkdir()  # skipped by name, as containerd does
    os.mknod(tmp_path / "sub" / "zero", stat.S_IFCHR | 0o640, os.makedev(1, 5))
    os.mknod(tmp_path / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
    os.mknod(tmp_path / "pts" / "x", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(tmp_path / "console", stat.S_IFCHR | 0o600, os.makedev(5, 1))
    (tmp_path / "file").write_text("x")
    os.symlink("sub/zero", tmp_path / "link")
    assert host.devices_under(str(tmp_path)) == [
        DeviceNode("b", str(tmp_path / "blk"), 7, 200, 0o600, 0, 0),
        DeviceNode("c", str(tmp_path / "sub" / "zero"), 1, 5, 0o640, 0, 0)]
    # a single --device path follows its symlink, as Docker does
    assert host.device(str(tmp_path / "link")) == DeviceNode(
        "c", str(tmp_path / "link"), 1, 5, 0o640, 0, 0)
    assert host.device(str(tmp_path / "file")) is None
    with pytest.raises(FileNotFoundError):
        host.device(str(tmp_path / "missing"))


def test_dev_listing_has_no_symlinks_or_pty_slaves() -> None:
    paths = [d.path for d in RealHost().devices_under("/dev")]
    assert "/dev/null" in paths and "/dev/zero" in paths
    assert not [p for p in paths if p.startswith(("/dev/pts/", "/dev/shm/", "/dev/fd/"))]
    assert "/dev/console" not in paths and "/dev/stdin" not in paths


def test_facts() -> None:
    host = RealHost()
    assert host.sysctl_exists("kernel.hostname")
    assert not host.sysctl_exists("kernel.no_such_sysctl")
    assert host.machine() == platform.machine()
    major, minor = host.kernel()
    assert f"{major}.{minor}" == ".".join(platform.release().split(".")[:2])
    assert host.cpu_count() == os.cpu_count()
    assert host.last_cap() == int(Path("/proc/sys/kernel/cap_last_cap").read_text())
