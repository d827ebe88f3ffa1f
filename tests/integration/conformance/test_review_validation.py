"""Conformance: the review's validation findings, with runc 1.1 as the reference.

A sysctl the container shares with the host is refused before anything is made (it would
change the host's setting); a seccomp profile libseccomp cannot build fails ``create``, not the
container's start; startContainer hooks run under the late seccomp filter (as in runc 1.1);
numbers out of range, a device at ``/`` and an unopenable ``--log`` fail with a clear message;
a file an image has at a device path is kept, never followed or replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conformance.test_bad_input import assert_nothing_left, create_fails
from tests.support.conformance import Box


class HostSysctls:
    """Reads host sysctls and puts back, at teardown, any a runtime changed (the test that
    let it happen fails anyway: a host setting must never be changed by a container)."""

    def __init__(self) -> None:
        self.before: dict[Path, str] = {}

    def read(self, key: str) -> str:
        path = Path("/proc/sys", *key.split("."))
        value = path.read_text()
        self.before.setdefault(path, value)
        return value.strip()

    def other(self, key: str) -> str:
        """A value the host does not have (0/1 keys flip)."""
        return "0" if self.read(key) != "0" else "1"

    def restore(self) -> None:
        for path, value in self.before.items():
            if path.read_text() != value:
                path.write_text(value)


@pytest.fixture
def host_sysctls() -> Iterator[HostSysctls]:
    sysctls = HostSysctls()
    yield sysctls
    sysctls.restore()


def test_sysctl_in_the_host_namespace_is_refused(box: Box, host_sysctls: HostSysctls) -> None:
    key = "kernel.core_pipe_limit"
    before = host_sysctls.read(key)
    bundle = box.bundle(["true"])
    bundle.config["linux"]["sysctl"] = {key: "7" if before != "7" else "8"}
    bundle.write()
    result = create_fails(box, bundle)
    assert key in result.stderr, result.describe()
    assert host_sysctls.read(key) == before, "host sysctl changed"


@pytest.mark.parametrize("key, namespace", [
    ("net.ipv4.ip_forward", "network"),
    ("kernel.shm_rmid_forced", "ipc"),
    ("kernel.domainname", "uts"),
])
def test_sysctl_needs_its_own_namespace(box: Box, host_sysctls: HostSysctls, key: str,
                                        namespace: str) -> None:
    before = host_sysctls.read(key)
    bundle = box.bundle(["true"])
    bundle.config["linux"]["namespaces"] = [
        ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != namespace]
    bundle.config["linux"]["sysctl"] = {
        key: "pydesk.invalid" if key == "kernel.domainname" else host_sysctls.other(key)}
    bundle.write()
    create_fails(box, bundle)
    assert host_sysctls.read(key) == before, "host sysctl changed"


def test_sysctl_in_a_new_namespace_is_applied(box: Box, host_sysctls: HostSysctls) -> None:
    key = "kernel.shm_rmid_forced"
    before = host_sysctls.read(key)
    wanted = host_sysctls.other(key)
    bundle = box.sh("cat /proc/sys/kernel/shm_rmid_forced")
    bundle.config["linux"]["sysctl"] = {key: wanted}
    assert box.run_ok(bundle) == wanted + "\n"
    assert host_sysctls.read(key) == before, "host sysctl changed"


def _seccomp(**changes: Any) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["swapon"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    profile.update(changes)
    return profile


@pytest.mark.parametrize("profile", [
    _seccomp(architectures=["SCMP_ARCH_BOGUS"]),
    _seccomp(defaultAction="SCMP_ACT_BOGUS"),
    _seccomp(syscalls=[{"names": ["swapon"], "action": "SCMP_ACT_BOGUS"}]),
    _seccomp(syscalls=[{"names": ["swapon"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]),
], ids=["architecture", "default-action", "action", "errno"])
def test_bad_seccomp_profile_fails_create(box: Box, profile: dict[str, Any]) -> None:
    bundle = box.bundle(["true"])
    assert bundle.config["process"]["noNewPrivileges"], "the late filter is the one tested"
    bundle.config["linux"]["seccomp"] = profile
    bundle.write()
    create_fails(box, bundle)


def test_start_container_hooks_run_under_the_late_seccomp_filter(box: Box) -> None:
    """runc 1.1 loads the no_new_privs filter before "ready": the hooks are filtered."""
    bundle = box.sh("test -d /hook-made && echo made")
    bundle.config["linux"]["seccomp"] = _seccomp(syscalls=[
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}])
    bundle.config["hooks"] = {"startContainer": [
        {"path": "/bin/mkdir", "args": ["mkdir", "/hook-made"]}]}
    box.run(bundle).check_failed_clearly()
    assert not (bundle.rootfs / "hook-made").exists()
    bundle.config["linux"]["seccomp"]["syscalls"][0]["names"] = ["swapon"]
    bundle.id += "-2"
    assert box.run_ok(bundle) == "made\n"


def test_oom_score_adj_out_of_range(box: Box) -> None:
    bundle = box.bundle(["true"])
    bundle.config["process"]["oomScoreAdj"] = 5000
    bundle.write()
    create_fails(box, bundle)


def test_device_at_the_root_is_refused(box: Box) -> None:
    bundle = box.bundle(["true"])
    bundle.config["linux"]["devices"] = [{"type": "c", "path": "/", "major": 1, "minor": 3}]
    bundle.write()
    result = box.runtime.run(bundle.id, bundle.path)
    # runc 1.1 keeps the existing directory (mknod: EEXIST is not an error) and runs; refusing
    # is as good. Never a bare errno.
    if result.returncode != 0:
        result.check_failed_clearly()
        assert "Errno" not in result.stderr, result.describe()
        assert_nothing_left(box, bundle)
    assert (bundle.rootfs / "bin").is_dir()


def test_unknown_capability_is_not_reported_as_a_python_error(box: Box) -> None:
    bundle = box.bundle(["true"])
    bundle.config["process"]["capabilities"]["bounding"].append("CAP_BOGUS")
    result = box.run(bundle)
    # runc 1.1 ignores unknown capabilities with a warning; refusing is fine too.
    if result.returncode != 0:
        result.check_failed_clearly()
        assert "CAP_BOGUS" in result.stderr and "SpecError" not in result.stderr, \
            result.describe()
        assert_nothing_left(box, bundle)


def test_log_in_a_missing_directory_fails(box: Box, tmp_path: Path) -> None:
    log = tmp_path / "no-such-dir" / "log"
    box.runtime("--log", str(log), "list").check_failed_clearly()
    assert not log.parent.exists()


def test_symlink_at_a_device_path_is_kept_not_followed(box: Box) -> None:
    """/dev is the image's own directory (no tmpfs) and its /dev/null is a symlink to a file
    of the image: the file must survive untouched (runc keeps what exists: EEXIST)."""
    bundle = box.bundle(["true"])
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if not m["destination"].startswith("/dev")]
    dev = bundle.rootfs / "dev"
    dev.mkdir(exist_ok=True)
    probe = bundle.rootfs / "etc" / "probe"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text("image data\n")
    (dev / "null").unlink(missing_ok=True)
    (dev / "null").symlink_to("/etc/probe")
    bundle.write()
    box.run(bundle).check()
    assert probe.is_file() and not probe.is_symlink(), "the symlink's target was replaced"
    assert probe.read_text() == "image data\n"
    assert (dev / "null").is_symlink()

