"""build_spec: Docker's defaults, then one test per option, on a fake host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types import Config, HostConfig
from pydeskd.daemon.ocispec import (
    DEFAULT_CAPABILITIES,
    ExecUser,
    SpecInputs,
    SpecMount,
    bind_mount,
    build_spec,
)
from pydeskd.runtime.spec import parse_spec
from tests.unit.daemon.ocispec.fakes import FakeHost

CID = "0123456789abcdef" * 4
IMAGE = {"Cmd": ["sh"], "Env": ["PATH=/image/bin:/bin", "LANG=C"], "WorkingDir": "/srv"}
ROOT = ExecUser(0, 0, (0,))


def build(config: dict[str, Any] | None = None, host: dict[str, Any] | None = None,
          fake: FakeHost | None = None, **inputs: Any) -> dict[str, Any]:
    hc = HostConfig.from_api(host or {}).with_defaults()
    inputs.setdefault("user", ROOT)
    inp = SpecInputs(CID, Config.from_api(config or {}), hc, "/rootfs", IMAGE,
                     hosts_path="/c/hosts", hostname_path="/c/hostname",
                     resolv_conf_path="/c/resolv.conf", **inputs)
    spec = build_spec(inp, fake or FakeHost())
    parse_spec(json.loads(json.dumps(spec)))  # pydesk-runc must accept every spec we build
    return spec


def mounts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in spec["mounts"]}


def namespaces(spec: dict[str, Any]) -> list[dict[str, str]]:
    ns: list[dict[str, str]] = spec["linux"]["namespaces"]
    return ns


def test_defaults_are_dockers() -> None:
    spec = build()
    proc = spec["process"]
    assert proc["args"] == ["sh"] and proc["cwd"] == "/srv"
    assert proc["env"] == ["PATH=/image/bin:/bin", f"HOSTNAME={CID[:12]}", "LANG=C"]
    assert proc["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert proc["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert proc["capabilities"]["effective"] == proc["capabilities"]["permitted"]
    assert "noNewPrivileges" not in proc and "terminal" not in proc and "rlimits" not in proc
    assert proc["oomScoreAdj"] == 0
    assert spec["hostname"] == CID[:12] and spec["root"] == {"path": "/rootfs"}
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm",
        "/etc/resolv.conf", "/etc/hostname", "/etc/hosts"]
    m = mounts(spec)
    assert m["/dev/shm"]["options"][-1] == "size=67108864"
    assert m["/dev/pts"]["options"][-1] == "gid=5"
    assert m["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind",
                               "source": "/c/hosts", "options": ["rbind", "rprivate"]}
    lx = spec["linux"]
    assert lx["cgroupsPath"] == f"/pydesk/{CID}"
    assert [n["type"] for n in namespaces(spec)] == ["mount", "network", "uts", "pid", "ipc",
                                                     "cgroup"]
    assert lx["sysctl"] == {"net.ipv4.ping_group_range": "0 2147483647",
                            "net.ipv4.ip_unprivileged_port_start": "0"}
    assert lx["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in \
        lx["resources"]["devices"]
    assert lx["resources"]["memory"] == {"disableOOMKiller": False}
    assert "cpu" not in lx["resources"] and "pids" not in lx["resources"]
    assert "/proc/kcore" in lx["maskedPaths"] and "/proc/sys" in lx["readonlyPaths"]
    assert lx["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "hooks" not in spec and "devices" not in lx


def test_thermal_throttle_dirs_the_host_has_are_masked() -> None:
    fake = FakeHost(paths=frozenset(("/sys/devices/system/cpu/cpu1/thermal_throttle",)))
    hc = HostConfig()  # masked paths not stored: the builder computes Docker's list
    spec = build_spec(SpecInputs(CID, Config(cmd=("true",)), hc, "/r", user=ROOT), fake)
    assert spec["linux"]["maskedPaths"][-1] == "/sys/devices/system/cpu/cpu1/thermal_throttle"


@pytest.mark.parametrize(("host", "expected"), [
    ({"CapDrop": ["ALL"], "CapAdd": ["chown"]}, ["CAP_CHOWN"]),
    ({"CapDrop": ["MKNOD", "cap_net_raw"]},
     [c for c in DEFAULT_CAPABILITIES if c not in ("CAP_MKNOD", "CAP_NET_RAW")]),
    ({"CapAdd": ["SYS_ADMIN", "CAP_CHOWN"]}, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]),
])
def test_cap_add_and_drop(host: dict[str, Any], expected: list[str]) -> None:
    assert build(host=host)["process"]["capabilities"]["bounding"] == expected


def test_cap_add_all() -> None:
    caps = build(host={"CapAdd": ["ALL"], "CapDrop": ["SYS_RESOURCE"]})["process"][
        "capabilities"]["bounding"]
    assert len(caps) == 40 and "CAP_SYS_RESOURCE" not in caps and caps[0] == "CAP_CHOWN"
    with pytest.raises(InvalidArgument, match="unknown capability"):
        build(host={"CapAdd": ["NOPE"]})


def test_privileged() -> None:
    spec = build(host={"Privileged": True, "Devices": [
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/null2", "CgroupPermissions": "r"}]})
    assert len(spec["process"]["capabilities"]["bounding"]) == 41
    lx = spec["linux"]
    assert "seccomp" not in lx and "maskedPaths" not in lx and "readonlyPaths" not in lx
    assert lx["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert [d["path"] for d in lx["devices"]] == ["/dev/null", "/dev/sda", "/dev/snd/timer",
                                                  "/dev/null2"]
    m = mounts(spec)
    assert "ro" not in m["/sys"]["options"] and "ro" not in m["/sys/fs/cgroup"]["options"]


def test_read_only_rootfs_tmpfs_and_shm_size() -> None:
    spec = build(host={"ReadonlyRootfs": True, "Tmpfs": {"/run": "size=1m,exec"},
                       "ShmSize": 32 << 20})
    assert spec["root"]["readonly"] is True
    m = mounts(spec)
    assert m["/run"] == {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid", "nodev", "rprivate", "size=1m", "exec"]}
    assert m["/etc/hosts"]["options"] == ["rbind", "ro", "rprivate"]
    assert m["/dev/shm"]["options"][-1] == "size=33554432"
    assert "ro" not in m["/dev/shm"]["options"] and "ro" in m["/sys"]["options"]
    order = [x["destination"] for x in spec["mounts"]]
    assert order.index("/run") < order.index("/etc/resolv.conf")  # sorted by depth


def test_mounts_of_type_tmpfs_and_user_mounts_replace_defaults() -> None:
    spec = build(host={"Mounts": [{"Type": "tmpfs", "Target": "/dev/shm", "ReadOnly": True,
                                   "TmpfsOptions": {"SizeBytes": 2 << 20, "Mode": 0o1777}}]},
                 mounts=(bind_mount("/host/data", "/data", read_only=True),
                         SpecMount("/v/etc-hosts", "/etc/hosts", "bind", ("rbind",))))
    m = mounts(spec)
    assert m["/dev/shm"]["options"] == ["noexec", "nosuid", "nodev", "rprivate", "ro",
                                        "mode=1777", "size=2m"]
    assert m["/data"]["options"] == ["rbind", "ro", "rprivate"]
    assert m["/etc/hosts"]["source"] == "/v/etc-hosts"  # the user's mount wins
    assert sum(x["destination"] == "/etc/hosts" for x in spec["mounts"]) == 1


def test_a_dev_mount_drops_every_dev_default() -> None:
    spec = build(mounts=(bind_mount("/dev", "/dev"),))
    assert not [x for x in spec["mounts"] if x["destination"].startswith("/dev/")]


def test_resources() -> None:
    r = build(host={"Memory": 64 << 20, "MemoryReservation": 32 << 20, "NanoCpus": 500_000_000,
                    "PidsLimit": 50, "CpuShares": 512, "CpusetCpus": "0-1",
                    "OomKillDisable": True})["linux"]["resources"]
    assert r["memory"] == {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20,
                           "disableOOMKiller": True}
    assert r["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"}
    assert r["pids"] == {"limit": 50}
    r = build(host={"CpuPeriod": 50000, "CpuQuota": 25000, "PidsLimit": 0,
                    "Memory": 64 << 20, "MemorySwap": -1})["linux"]["resources"]
    assert r["cpu"] == {"quota": 25000, "period": 50000} and r["pids"] == {"limit": -1}
    assert "swap" not in r["memory"]


def test_ulimits_nnp_user_workdir_env_sysctl_tty() -> None:
    spec = build(
        config={"User": "1000:1000", "WorkingDir": "/tmp/w", "Env": ["A=1", "LANG", "PATH=/x"],
                "Tty": True, "Domainname": "example.org"},
        host={"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
              "SecurityOpt": ["no-new-privileges"], "Sysctls": {"net.ipv4.ip_forward": "1"},
              "ConsoleSize": [24, 80]},
        user=None, fake=FakeHost())
    proc = spec["process"]
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024}]
    assert proc["noNewPrivileges"] is True and proc["terminal"] is True
    assert proc["consoleSize"] == {"height": 24, "width": 80}
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000]}
    assert proc["cwd"] == "/tmp/w"
    # LANG without "=" unsets the image's; the user's PATH replaces the default in place
    assert proc["env"] == ["PATH=/x", f"HOSTNAME={CID[:12]}", "TERM=xterm", "A=1"]
    assert spec["linux"]["sysctl"]["net.ipv4.ip_forward"] == "1"
    assert spec["linux"]["sysctl"]["kernel.domainname"] == "example.org"


def test_entrypoint_and_cmd() -> None:
    assert build(config={"Cmd": ["ls", "-l"]})["process"]["args"] == ["ls", "-l"]
    assert build(config={"Entrypoint": ["/bin/echo"]})["process"]["args"] == ["/bin/echo"]
    assert build(config={"Entrypoint": ["/bin/echo"], "Cmd": ["hi"]})["process"]["args"] == [
        "/bin/echo", "hi"]
    assert build(config={"Entrypoint": [""], "Cmd": ["id"]})["process"]["args"] == ["id"]


def test_devices_and_cgroup_rules() -> None:
    spec = build(host={"Devices": [
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rw"},
        {"PathOnHost": "/dev/snd", "PathInContainer": "/dev/sound", "CgroupPermissions": "rwm"}],
        "DeviceCgroupRules": ["c 42:* rmw", "a *:* m"]})
    lx = spec["linux"]
    assert lx["devices"] == [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
         "uid": 0, "gid": 0},
        {"path": "/dev/sound/timer", "type": "c", "major": 116, "minor": 33, "fileMode": 0o660,
         "uid": 0, "gid": 29}]
    rules = lx["resources"]["devices"]
    assert rules[-4:] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "c", "major": 116, "minor": 33, "access": "rwm"},
        {"allow": True, "type": "c", "major": 42, "access": "rmw"},
        {"allow": True, "type": "a", "access": "m"}]
    with pytest.raises(InvalidArgument, match="error gathering device information"):
        build(host={"Devices": [{"PathOnHost": "/dev/nope", "PathInContainer": "/dev/x"}]})
    with pytest.raises(InvalidArgument, match="invalid device cgroup rule"):
        build(host={"DeviceCgroupRules": ["x 1:2 rwm"]})


def test_host_and_container_namespaces() -> None:
    spec = build(host={"NetworkMode": "host", "IpcMode": "host", "PidMode": "host",
                       "UTSMode": "host"})
    assert [n["type"] for n in namespaces(spec)] == ["mount", "cgroup"]
    assert "hostname" not in spec and "sysctl" not in spec["linux"]
    assert mounts(spec)["/dev/shm"] == {"destination": "/dev/shm", "type": "bind",
                                        "source": "/dev/shm", "options": ["rbind", "rprivate"]}
    spec = build(host={"NetworkMode": "container:other", "IpcMode": "container:other",
                       "PidMode": "container:other", "CgroupnsMode": "host"},
                 namespace_paths={"network": "/proc/9/ns/net", "ipc": "/proc/9/ns/ipc",
                                  "pid": "/proc/9/ns/pid"}, shm_path="/c/other/shm")
    assert namespaces(spec) == [
        {"type": "mount"}, {"type": "network", "path": "/proc/9/ns/net"}, {"type": "uts"},
        {"type": "pid", "path": "/proc/9/ns/pid"}, {"type": "ipc", "path": "/proc/9/ns/ipc"}]
    assert mounts(spec)["/dev/shm"]["source"] == "/c/other/shm"
    with pytest.raises(InvalidArgument, match="namespace path"):
        build(host={"PidMode": "container:x"})
    assert build(host={"IpcMode": "none"}).get("mounts") and "/dev/shm" not in mounts(
        build(host={"IpcMode": "none"}))
    netns = build(namespace_paths={"network": "/run/netns/c1"})
    assert namespaces(netns)[1] == {"type": "network", "path": "/run/netns/c1"}


def test_init() -> None:
    spec = build(host={"Init": True}, init_path="/usr/libexec/pydesk-init")
    assert spec["process"]["args"] == ["/sbin/docker-init", "--", "sh"]
    assert mounts(spec)["/sbin/docker-init"] == {
        "destination": "/sbin/docker-init", "type": "bind",
        "source": "/usr/libexec/pydesk-init", "options": ["bind", "ro"]}
    assert build(host={"Init": True, "PidMode": "host"},
                 init_path="/i")["process"]["args"] == ["sh"]
    with pytest.raises(InvalidArgument, match="init"):
        build(host={"Init": True})


def test_seccomp_options() -> None:
    assert "seccomp" not in build(host={"SecurityOpt": ["seccomp=unconfined"]})["linux"]
    custom = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})
    seccomp = build(host={"SecurityOpt": [f"seccomp={custom}"]})["linux"]["seccomp"]
    assert seccomp == {"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    priv = build(host={"Privileged": True, "SecurityOpt": [f"seccomp={custom}"]})
    assert priv["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    admin = build(host={"CapAdd": ["SYS_ADMIN"]})["linux"]["seccomp"]
    assert any("mount" in r["names"] for r in admin["syscalls"])
    with pytest.raises(InvalidArgument, match="Decoding seccomp profile failed"):
        build(host={"SecurityOpt": ["seccomp={nope"]})


def test_cgroup_parent_and_masked_path_overrides() -> None:
    spec = build(host={"CgroupParent": "/custom", "MaskedPaths": ["/proc/x"],
                       "ReadonlyPaths": []}, cgroup_parent="/other")
    assert spec["linux"]["cgroupsPath"] == f"/custom/{CID}"
    assert spec["linux"]["maskedPaths"] == ["/proc/x"] and "readonlyPaths" not in spec["linux"]
    assert build(cgroup_parent="/pd/")["linux"]["cgroupsPath"] == f"/pd/{CID}"


def test_user_from_the_rootfs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:100:101::/h:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\napp:x:101:\naudio:x:29:app\nvideo:x:44:\n")
    hc = HostConfig.from_api({"GroupAdd": ["video", "1234"]}).with_defaults()
    spec = build_spec(SpecInputs(CID, Config(user="app", cmd=("id",)), hc, str(tmp_path)),
                      FakeHost())
    assert spec["process"]["user"] == {"uid": 100, "gid": 101,
                                       "additionalGids": [101, 29, 44, 1234]}
    with pytest.raises(InvalidArgument, match="unable to find user nobody"):
        build_spec(SpecInputs(CID, Config(user="nobody", cmd=("id",)), hc, str(tmp_path)),
                   FakeHost())


def test_privileged_gets_only_the_capabilities_the_daemon_holds() -> None:
    """moby's GetAllCapabilities: a daemon without CAP_SYS_RESOURCE in its bounding set (a
    restricted sandbox) cannot grant it; asking the runtime for it would fail the start."""
    from pydeskd.runtime.capabilities import CAPABILITIES

    without = ((1 << 41) - 1) & ~(1 << CAPABILITIES["CAP_SYS_RESOURCE"])
    for host in ({"Privileged": True}, {"CapAdd": ["ALL"]}):
        caps = build(host=host, fake=FakeHost(bounding=without))["process"]["capabilities"]
        assert "CAP_SYS_RESOURCE" not in caps["bounding"] and "CAP_SYS_ADMIN" in caps["bounding"]
        assert len(caps["effective"]) == 40
    assert "CAP_SYS_RESOURCE" in build(host={"Privileged": True})["process"]["capabilities"][
        "bounding"]
