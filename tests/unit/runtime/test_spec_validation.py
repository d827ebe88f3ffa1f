"""Review findings checked without privileges: sysctl keys against namespaces, ranges and
required fields refused at parse, seccomp profiles refused before libseccomp, device nodes
never following a final symlink, an unopenable --log."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pydeskd.runtime import devices, log
from pydeskd.runtime.errors import SpecError
from pydeskd.runtime.seccomp import build_seccomp
from pydeskd.runtime.spec import Device, parse_spec
from tests.support.busybox import base_config


def _config(namespaces: tuple[str, ...], sysctl: dict[str, str]) -> dict[str, Any]:
    config = base_config()
    config["linux"]["namespaces"] = [{"type": t} for t in namespaces]
    config["linux"]["sysctl"] = sysctl
    return config


@pytest.mark.parametrize("key, needs", [
    ("kernel.msgmax", "ipc"), ("kernel.shm_rmid_forced", "ipc"), ("fs.mqueue.msg_max", "ipc"),
    ("net.ipv4.ip_forward", "network"), ("kernel.domainname", "uts"),
])
def test_sysctl_needs_its_namespace(key: str, needs: str) -> None:
    everything = ("pid", "network", "ipc", "uts", "mount")
    parse_spec(_config(everything, {key: "1"}))
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        parse_spec(_config(tuple(n for n in everything if n != needs), {key: "1"}))


@pytest.mark.parametrize("key", ["kernel.core_pipe_limit", "kernel.hostname", "vm.swappiness",
                                 "kernel.msg", "net", "net..x", "net/ipv4/ip_forward",
                                 "fs.file-max"])
def test_sysctl_never_owned_by_a_container_namespace(key: str) -> None:
    with pytest.raises(SpecError, match=r"linux\.sysctl"):
        parse_spec(_config(("pid", "network", "ipc", "uts", "mount", "cgroup"), {key: "1"}))


def test_sysctl_in_a_joined_namespace_that_is_the_hosts_is_refused() -> None:
    config = _config(("pid", "ipc", "mount"), {"net.ipv4.ip_forward": "1"})
    config["linux"]["namespaces"].append({"type": "network", "path": "/proc/self/ns/net"})
    with pytest.raises(SpecError, match="network namespace"):
        parse_spec(config)


@pytest.mark.parametrize("where, value, field", [
    (("process", "oomScoreAdj"), 5000, "oomScoreAdj"),
    (("process", "oomScoreAdj"), -1001, "oomScoreAdj"),
    (("process", "user", "umask"), 99999, "umask"),
    (("process", "user", "umask"), -1, "umask"),
])
def test_numbers_out_of_range(where: tuple[str, ...], value: int, field: str) -> None:
    config = base_config()
    node = config
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(SpecError, match=field):
        parse_spec(config)


@pytest.mark.parametrize("device, message", [
    ({"type": "c", "path": "/", "major": 1, "minor": 3}, "root"),
    ({"type": "c", "path": "/dev/x"}, "major"),
    ({"type": "b", "path": "/dev/x", "major": 8}, "minor"),
])
def test_bad_devices(device: dict[str, Any], message: str) -> None:
    config = base_config()
    config["linux"]["devices"] = [device]
    with pytest.raises(SpecError, match=message):
        parse_spec(config)


def test_fifo_device_needs_no_numbers() -> None:
    config = base_config()
    config["linux"]["devices"] = [{"type": "p", "path": "/dev/fifo"}]
    assert parse_spec(config).linux.devices[0].major == 0


@pytest.mark.parametrize("change, message", [
    ({"architectures": ["SCMP_ARCH_BOGUS"]}, "SCMP_ARCH_BOGUS"),
    ({"defaultAction": "SCMP_ACT_BOGUS"}, "SCMP_ACT_BOGUS"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}, "defaultErrnoRet"),
    ({"syscalls": [{"names": ["swapon"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]},
     "errnoRet"),
])
def test_bad_seccomp_profile_is_refused_at_parse(change: dict[str, Any], message: str) -> None:
    config = base_config()
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                  "architectures": ["SCMP_ARCH_X86_64"], **change}
    with pytest.raises(SpecError, match=message):
        parse_spec(config)


def test_seccomp_filter_is_built_without_loading() -> None:
    config = base_config()
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["swapon", "no_such_call"], "action": "SCMP_ACT_ERRNO"}]}
    profile = parse_spec(config).linux.seccomp
    assert profile is not None
    built = build_seccomp(profile)  # needs no privilege: nothing is loaded
    built.release()
    built.release()  # twice is harmless


def test_device_node_never_follows_or_replaces_what_exists(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "dev").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "passwd").write_text("root:x:0:0\n")
    (rootfs / "dev" / "fifo").symlink_to("/etc/passwd")
    (rootfs / "dev" / "ptmx").symlink_to("/etc/passwd")
    fifo = Device("p", "/dev/fifo", 0, 0, 0o600, os.getuid(), os.getgid())
    devices.create_device(str(rootfs), fifo)
    assert (rootfs / "dev" / "fifo").is_symlink()
    assert (rootfs / "etc" / "passwd").read_text() == "root:x:0:0\n"
    devices.setup_ptmx(str(rootfs))  # replaces the link itself, never its target
    assert os.readlink(rootfs / "dev" / "ptmx") == "pts/ptmx"
    assert (rootfs / "etc" / "passwd").read_text() == "root:x:0:0\n"
    # Through a symlinked directory the node lands inside the rootfs.
    (rootfs / "devdir").symlink_to("/dev")
    devices.create_device(str(rootfs), Device("p", "/devdir/new", 0, 0, 0o640, os.getuid(),
                                              os.getgid()))
    made = os.lstat(rootfs / "dev" / "new")
    assert stat.S_ISFIFO(made.st_mode) and stat.S_IMODE(made.st_mode) == 0o640
    assert devices.node_path(str(rootfs), "/dev/../dev/x") == str(rootfs / "dev" / "x")


def test_log_that_cannot_be_opened_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        log.configure(str(tmp_path / "missing" / "log"), "text", False)
    log.configure(str(tmp_path / "log"), "text", False)
    log.error("x")
    log.configure(None, "text", False)
    assert "level=error" in (tmp_path / "log").read_text()
