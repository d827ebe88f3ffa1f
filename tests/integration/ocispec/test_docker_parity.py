"""build_spec against the real Docker Engine: same request, same config.json.

A private dockerd (tests/support/docker_engine.py) runs busybox with a matrix of ``docker
run`` flags through a capturing runtime (a script that copies each bundle's config.json,
then hands the call to runc), so even containers this sandbox cannot start (--privileged)
leave their spec. For each, pydesk builds its spec from what Docker stored (``inspect``'s
Config and HostConfig, the image's config) and the paths that must differ (rootfs, /etc
files, cgroup parent), and the two must be equal but for parity.ALLOWED.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.daemon.config_types import Config, HostConfig
from pydeskd.daemon.ocispec import SpecInputs, SpecMount, bind_mount, build_spec, resolve_user
from tests.integration.ocispec.parity import (
    NEWER_CAPS,
    SEC_20_ONLY,
    SEC_28_ONLY,
    UNHELD_CAPS,
    differences,
)
from tests.support.busybox import make_rootfs
from tests.support.docker_engine import DockerEngine
from tests.support.runtimes import remove_cgroup, token

IMAGE = "pydesk-ocispec-busybox:latest"
PROFILE = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
    {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
    {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
]}


class Reference:
    def __init__(self, engine: DockerEngine, captures: Path, rootfs: Path, work: Path,
                 cgroup_parent: str):
        self.cgroup_parent = cgroup_parent
        self.engine = engine
        self.captures = captures
        self.rootfs = rootfs
        self.work = work


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    work = tmp_path_factory.mktemp("ocispec-parity")
    captures = work / "captures"
    captures.mkdir()
    runc = shutil.which("runc") or "/usr/sbin/runc"
    capture = work / "capture-runc"
    # Copies the bundle's config.json when containerd's shim calls "create --bundle DIR".
    capture.write_text(f"""#!/bin/sh
prev=""
for arg in "$@"; do
  if [ "$prev" = "--bundle" ]; then cp "$arg/config.json" "{captures}/$(basename "$arg").json"; fi
  prev="$arg"
done
exec {runc} "$@"
""")
    capture.chmod(capture.stat().st_mode | stat.S_IXUSR)
    rootfs = work / "rootfs"
    make_rootfs(rootfs)
    (rootfs / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (rootfs / "etc/group").write_text("root:x:0:\ntty:x:5:\naudio:x:29:app\napp:x:1000:\n"
                                      "nogroup:x:65534:\n")
    (work / "profile.json").write_text(json.dumps(PROFILE))
    (work / "src").mkdir()
    engine = DockerEngine()
    engine.config["runtimes"] = {"capture": {"path": str(capture)}}
    # A cgroup parent of our own, removed afterwards (Docker's "/docker" would outlive us).
    parent = f"/pydesk-parity-{token()}"
    engine.config["cgroup-parent"] = parent
    with contextlib.ExitStack() as stack:
        stack.callback(remove_cgroup, parent)
        stack.enter_context(engine)
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], check=True,
                             capture_output=True).stdout
        engine.docker("import", "--change", 'CMD ["sleep", "1000"]', "--change",
                      "ENV LANG=C.UTF-8", "--change", "WORKDIR /", "-", IMAGE, input=tar)
        yield Reference(engine, captures, rootfs, work, parent)


CASES: dict[str, list[str]] = {
    "defaults": [],
    "cap_add_drop": ["--cap-add", "SYS_ADMIN", "--cap-add", "net_admin", "--cap-add", "CHOWN",
                     "--cap-drop", "MKNOD"],
    "cap_drop_all": ["--cap-drop", "ALL", "--cap-add", "chown"],
    "cap_add_all": ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE"],
    "privileged": ["--privileged"],
    "read_only_tmpfs": ["--read-only", "--tmpfs", "/run:size=1m,exec", "--tmpfs", "/scratch",
                        "--shm-size", "32m"],
    "memory_cpus_pids": ["--memory", "64m", "--memory-reservation", "32m", "--cpus", "0.5",
                         "--pids-limit", "50", "--cpu-shares", "512", "--cpuset-cpus", "0"],
    "cpu_period_swap": ["--cpu-period", "50000", "--cpu-quota", "25000", "--memory", "32m",
                        "--memory-swap", "-1", "--oom-kill-disable"],
    "ulimits": ["--ulimit", "nofile=1024:2048", "--ulimit", "nproc=100"],
    "nnp_user_workdir": ["--security-opt", "no-new-privileges", "-u", "1000:1000",
                         "-w", "/tmp/w"],
    "user_name_groups": ["-u", "app", "--group-add", "audio", "--group-add", "4242"],
    "entrypoint_env_tty": ["--entrypoint", "/bin/echo", "-e", "A=1", "-e", "PATH=/x:/bin",
                           "-e", "LANG", "-t", "--hostname", "hh", "--domainname", "example.org"],
    "sysctl_devices": ["--sysctl", "net.ipv4.ip_forward=1", "--device", "/dev/null:/dev/mynull:rw",
                       "--device", "/dev/zero", "--device-cgroup-rule", "c 42:* rmw"],
    "host_namespaces": ["--ipc", "host", "--pid", "host", "--uts", "host"],
    "network_host": ["--network", "host"],
    "ipc_none": ["--ipc", "none"],
    "binds_and_mounts": ["-v", "{src}:/data:ro", "--mount", "type=bind,src={src},dst=/data2",
                         "--mount", "type=tmpfs,dst=/t,tmpfs-size=2097152,tmpfs-mode=1777"],
    "seccomp_unconfined": ["--security-opt", "seccomp=unconfined",
                           "--security-opt", "apparmor=unconfined"],
    "seccomp_custom": ["--security-opt", "seccomp={work}/profile.json", "--cap-add", "SYS_ADMIN"],
    "systempaths_unconfined": ["--security-opt", "systempaths=unconfined"],
    "init": ["--init"],
}


def user_mounts(host: HostConfig) -> list[SpecMount]:
    """What the daemon resolves from Binds and bind Mounts (H3's part; simple forms here)."""
    out = []
    for bind in host.binds or ():
        source, dest, *mode = bind.split(":")
        out.append(bind_mount(source, dest, read_only="ro" in (mode[0].split(",") if mode
                                                                 else ())))
    for m in host.mounts or ():
        if m.type == "bind":
            out.append(bind_mount(m.source, m.target, read_only=m.read_only))
    return out


def run_both(ref: Reference, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    flags = [f.format(src=ref.work / "src", work=ref.work) for f in CASES[name]]
    if "--network" not in flags:
        flags = ["--network", "none", *flags]
    cname = f"parity-{name.replace('_', '-')}"
    ref.engine.docker("rm", "-f", cname, check=False)
    ref.engine.docker("run", "-d", "--runtime", "capture", "--name", cname, *flags, IMAGE,
                      check=False)
    inspect = json.loads(ref.engine.docker("inspect", cname).stdout)[0]
    image = json.loads(ref.engine.docker("image", "inspect", IMAGE).stdout)[0]
    captured = ref.captures / f"{inspect['Id']}.json"
    assert captured.exists(), ref.engine.log_tail()
    docker = json.loads(captured.read_text())
    config = Config.from_api(inspect["Config"])
    host = HostConfig.from_api(inspect["HostConfig"])
    by_dest = {m["destination"]: m["source"] for m in docker["mounts"]}
    ours = build_spec(SpecInputs(
        inspect["Id"], config, host, docker["root"]["path"], image["Config"],
        mounts=tuple(user_mounts(host)), hosts_path=by_dest.get("/etc/hosts"),
        hostname_path=by_dest.get("/etc/hostname"),
        resolv_conf_path=by_dest.get("/etc/resolv.conf"), cgroup_parent=ref.cgroup_parent,
        user=resolve_user(str(ref.rootfs), config.user, host.group_add or ()),
        init_path=by_dest.get("/sbin/docker-init")))
    ref.engine.docker("rm", "-f", cname, check=False)
    return docker, ours


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_spec_as_docker(reference: Reference, name: str) -> None:
    docker, ours = run_both(reference, name)
    assert differences(docker, ours) == []


def test_the_allowed_seccomp_differences_are_exact(reference: Reference) -> None:
    """The documented profile drift is exactly what the two engines show, no more."""
    docker, ours = run_both(reference, "cap_add_drop")
    d = {n for r in docker["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    o = {n for r in ours["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    assert d - o == SEC_20_ONLY
    assert o - d <= SEC_28_ONLY and len(o - d) >= 20
    assert ours["linux"]["seccomp"]["defaultErrnoRet"] == 1


def test_docker_28_masked_paths_extend_docker_20s(reference: Reference) -> None:
    docker, _ = run_both(reference, "defaults")
    ours = HostConfig().with_defaults().masked_paths or ()
    assert [p for p in ours if p not in docker["linux"]["maskedPaths"]] == [
        "/proc/interrupts", "/sys/devices/virtual/powercap"]
    assert set(docker["linux"]["maskedPaths"]) <= set(ours)


def test_privileged_gets_every_capability_the_daemon_holds(reference: Reference) -> None:
    docker, ours = run_both(reference, "privileged")
    from pydeskd.runtime.capabilities import CAPABILITIES, last_cap
    ours_caps = ours["process"]["capabilities"]["bounding"]
    held = [n for n in range(last_cap() + 1)
            if n not in {CAPABILITIES[c] for c in UNHELD_CAPS}]
    assert [CAPABILITIES[c] for c in ours_caps] == held
    assert [c for c in docker["process"]["capabilities"]["bounding"]
            if c not in UNHELD_CAPS] == [c for c in ours_caps if c not in NEWER_CAPS]


# Keys Docker 20.10's inspect shows that Docker 28 omits when empty (deprecated or omitempty).
INSPECT_ALLOWED = {("HostConfig", "KernelMemory"), ("HostConfig", "KernelMemoryTCP"),
                   ("Config", "OnBuild")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_types_round_trip_dockers_inspect(reference: Reference, name: str) -> None:
    """from_api(Docker's stored Config/HostConfig).to_api() is what Docker's inspect shows:
    every key, Docker's nulls and empties, for each flag set."""
    flags = [f.format(src=reference.work / "src", work=reference.work) for f in CASES[name]]
    if "--network" not in flags:
        flags = ["--network", "none", *flags]
    cname = f"inspect-{name.replace('_', '-')}"
    reference.engine.docker("create", "--runtime", "capture", "--name", cname, *flags, IMAGE)
    try:
        inspect = json.loads(reference.engine.docker("inspect", cname).stdout)[0]
    finally:
        reference.engine.docker("rm", "-f", cname, check=False)
    for key, kind in (("Config", Config), ("HostConfig", HostConfig)):
        docker = inspect[key]
        ours = kind.from_api(docker).to_api()
        diffs = [(k, docker.get(k, "<absent>"), ours.get(k, "<absent>"))
                 for k in sorted(set(docker) | set(ours))
                 if (key, k) not in INSPECT_ALLOWED and docker.get(k, 0j) != ours.get(k, 0j)]
        assert diffs == [], key
