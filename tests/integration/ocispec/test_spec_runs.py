"""A spec from build_spec runs under pydesk-runc and confines the process as Docker's does.

pid/mount/uts/ipc namespaces and a new netns; the default capability set is what the process
holds; seccomp is in filter mode; mount(2) is refused without CAP_SYS_ADMIN (seccomp says
EPERM before the capability check could), and allowed by the spec's CAP_SYS_ADMIN variant.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.daemon.config_types import Config, HostConfig
from pydeskd.daemon.ocispec import SpecInputs, build_spec, resolve_user
from pydeskd.runtime.capabilities import CAPABILITIES
from tests.support.busybox import copy_rootfs
from tests.support.runtimes import PYDESK_RUNC, Runtime, remove_cgroup, token

PROBE = ("grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; "
         "hostname; mkdir -p /mnt; mount -t tmpfs probe /mnt 2>/tmp/err; echo mount=$?; "
         "echo \"mounterr=$(cat /tmp/err)\"; "
         "ls /sys/class/net; id -u; cat /proc/self/uid_map >/dev/null; echo done")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime("pydesk-runc", PYDESK_RUNC, tmp_path / "state")
    yield rt
    rt.cleanup()


def run_spec(runtime: Runtime, tmp_path: Path, template: Path,
             host: dict[str, Any]) -> dict[str, str]:
    cid = "ocispec-" + token()
    bundle = tmp_path / cid
    bundle.mkdir()
    copy_rootfs(template, bundle / "rootfs")
    hc = HostConfig.from_api(host).with_defaults()
    config = Config(cmd=("sh", "-c", PROBE), hostname="probe")
    spec = build_spec(SpecInputs(
        cid, config, hc, str(bundle / "rootfs"), cgroup_parent="/pydesk-test",
        user=resolve_user(str(bundle / "rootfs"), "", ())))
    (bundle / "config.json").write_text(json.dumps(spec))
    try:
        result = runtime.run(cid, bundle, timeout=60)
    finally:
        remove_cgroup(spec["linux"]["cgroupsPath"])
    assert result.returncode == 0, result.describe()
    lines = result.stdout.splitlines()
    assert lines[-1] == "done", result.describe()
    fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    fields["hostname"] = lines[4]
    fields["mount"] = next(x for x in lines if x.startswith("mount="))
    fields["mounterr"] = next(x for x in lines if x.startswith("mounterr="))
    fields["net"] = " ".join(lines[lines.index(fields["mounterr"]) + 1:-2])
    fields["uid"] = lines[-2]
    return fields


def cap_mask(names: list[str]) -> int:
    return sum(1 << CAPABILITIES[n] for n in names)


def test_default_spec_confines(runtime: Runtime, tmp_path: Path, rootfs_template: Path) -> None:
    got = run_spec(runtime, tmp_path, rootfs_template, {})
    default = cap_mask(["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
                        "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP",
                        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
                        "CAP_AUDIT_WRITE"])
    assert int(got["CapEff"], 16) == default
    assert int(got["CapBnd"], 16) == default
    assert got["Seccomp"] == "2"
    assert got["NoNewPrivs"] == "0"
    assert got["mount"] == "mount=1", got  # refused: EPERM from the filter
    assert "permission denied" in got["mounterr"], got
    assert got["hostname"] == "probe"
    assert got["net"] == "lo"  # a new, empty network namespace
    assert got["uid"] == "0"


def test_cap_sys_admin_and_no_new_privileges(runtime: Runtime, tmp_path: Path,
                                             rootfs_template: Path) -> None:
    got = run_spec(runtime, tmp_path, rootfs_template,
                   {"CapAdd": ["SYS_ADMIN"], "CapDrop": ["NET_RAW"],
                    "SecurityOpt": ["no-new-privileges"]})
    caps = int(got["CapEff"], 16)
    assert caps & (1 << CAPABILITIES["CAP_SYS_ADMIN"])
    assert not caps & (1 << CAPABILITIES["CAP_NET_RAW"])
    assert got["Seccomp"] == "2" and got["NoNewPrivs"] == "1"
    assert got["mount"] == "mount=0", got  # CAP_SYS_ADMIN unlocks mount in the profile


def test_unconfined_cap_drop_all(runtime: Runtime, tmp_path: Path,
                                 rootfs_template: Path) -> None:
    got = run_spec(runtime, tmp_path, rootfs_template,
                   {"CapDrop": ["ALL"], "SecurityOpt": ["seccomp=unconfined"]})
    assert int(got["CapEff"], 16) == 0 and int(got["CapBnd"], 16) == 0
    assert got["Seccomp"] == "0"
    assert got["mount"] == "mount=1", got  # no seccomp, but no CAP_SYS_ADMIN either
    assert "permission denied" in got["mounterr"], got
