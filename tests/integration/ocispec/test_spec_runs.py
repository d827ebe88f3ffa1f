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


FACTS = """
touch /rootfile 2>/dev/null && echo rootfs=rw || echo rootfs=ro
touch /run/x && echo run=rw
echo "nofile=$(ulimit -n)"
echo "id=$(id -u):$(id -g):$(id -G | tr ' ' ,)"
echo "cwd=$(pwd)"
echo "env=$A:$HOSTNAME:$TERM"
echo "shm=$(df -k /dev/shm | tail -1 | awk '{print $2}')"
echo "interrupts=$(wc -c < /proc/interrupts)"
echo "firmware=$(ls -A /sys/firmware | wc -l)"
echo 1 2>/dev/null > /proc/sys/kernel/domainname && echo procsys=rw || echo procsys=ro
echo "fwd=$(cat /proc/sys/net/ipv4/ip_forward)"
echo "ping=$(cat /proc/sys/net/ipv4/ping_group_range | tr '\t' ' ')"
ls /dev
"""


def test_docker_flags_take_effect(runtime: Runtime, tmp_path: Path,
                                  rootfs_template: Path) -> None:
    """--read-only --tmpfs /run --ulimit nofile --user --workdir -e --shm-size --sysctl:
    each visible from inside, with Docker's masked and read-only /proc paths."""
    cid = "ocispec-" + token()
    bundle = tmp_path / cid
    bundle.mkdir()
    copy_rootfs(rootfs_template, bundle / "rootfs")
    (bundle / "rootfs" / "tmp" / "w").mkdir()
    hc = HostConfig.from_api({
        "ReadonlyRootfs": True, "Tmpfs": {"/run": "size=1m,uid=1000"}, "ShmSize": 8 << 20,
        "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 1024}],
        "Sysctls": {"net.ipv4.ip_forward": "1"}, "GroupAdd": ["4242"]}).with_defaults()
    config = Config(cmd=("sh", "-c", FACTS), user="1000:1000", working_dir="/tmp/w",
                    env=("A=1",), hostname="facts")
    rootfs = str(bundle / "rootfs")
    spec = build_spec(SpecInputs(cid, config, hc, rootfs, cgroup_parent="/pydesk-test",
                                 user=resolve_user(rootfs, config.user, hc.group_add or ())))
    (bundle / "config.json").write_text(json.dumps(spec))
    try:
        result = runtime.run(cid, bundle, timeout=60)
    finally:
        remove_cgroup(spec["linux"]["cgroupsPath"])
    assert result.returncode == 0, result.describe()
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert facts["rootfs"] == "ro" and facts["run"] == "rw", result.describe()
    assert facts["nofile"] == "512"
    assert facts["id"] == "1000:1000:1000,4242"
    assert facts["cwd"] == "/tmp/w"
    assert facts["env"] == "1:facts:"
    assert facts["shm"] == str(8 << 10)
    # masked (Docker 28 adds /proc/interrupts): a file reads empty, a directory is empty
    assert facts["interrupts"] == "0" and facts["firmware"] == "0", result.describe()
    assert facts["procsys"] == "ro"
    assert facts["fwd"] == "1"
    assert facts["ping"] == "0 2147483647"
    devices = set(result.stdout.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
            "ptmx"} <= devices
