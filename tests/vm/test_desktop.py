"""Issue 7's acceptance in VM mode, from the host: the desktop scenario through the agent's API
socket (bind mount synced into the guest, port forwarded by QEMU), the docker CLI with
``--context pydesk``, docker-py and Testcontainers on the host socket, and an agent killed with
-9 whose successor adopts the VM and restores forwarding and sync without sending everything
again."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import docker  # type: ignore[import-untyped]

from pydesk.agent.process import find_agent, find_qemu
from tests.support.desktop_scenario import fetch, run_site_scenario, run_testcontainers, wait_for
from tests.support.image_fixtures import busybox_mirror  # noqa: F401 -- a fixture
from tests.support.registry import Registry
from tests.support.terminal import read_until, under_pty
from tests.vm.vmdriver import VmDriver

DOCKER = shutil.which("docker") or "docker"
PYDESK = str(Path(sys.executable).with_name("pydesk"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_desktop_mode_end_to_end(vm: VmDriver, busybox_mirror: Registry,  # noqa: F811
                                 tmp_path: Path) -> None:
    mirror = "10.0.2.2:" + busybox_mirror.host.rsplit(":", 1)[1]
    vm.env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    vm.cli("vm", "start", "--memory", "1G", "--daemon-json", json.dumps(
        {"registry-mirrors": [f"http://{mirror}"], "insecure-registries": [mirror]}))
    sock = vm.home / "run" / "docker.sock"
    wait_for(sock.exists, 30, step=0.1)
    assert sock.stat().st_mode & 0o777 == 0o600

    def pydesk(*args: str) -> subprocess.CompletedProcess[str]:
        # VM mode chosen by the flag; PYDESK_HOME places the socket
        return vm.cli("--mode", "vm", *args)

    # 1. the scenario: host file served, an edit within 1 s, a container write on the host,
    # the page rendered by Chromium
    site = tmp_path / "site"
    port = free_port()
    measured = run_site_scenario(pydesk, site, port, "busybox", start_timeout=180)
    print(f"edit served after {measured.edit_seconds:.3f} s, container write on the host "
          f"after {measured.back_seconds:.3f} s")

    # a host port that is taken: said by `run -d`, `port` and the agent's status
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ran = pydesk("run", "-d", "-p", f"{busy}:80", "busybox", "sleep", "600")
        assert f"host port {busy}/tcp is not forwarded" in ran.stderr, ran.stderr
        assert "already in use" in ran.stderr, ran.stderr
        shown = pydesk("port", ran.stdout.strip())
        assert f"host port {busy}/tcp is not forwarded" in shown.stderr, shown.stderr
        assert any(f"host port {busy}" in line and "already in use" in line
                   for line in vm.files.status.read_text().splitlines())
        pydesk("rm", "-f", ran.stdout.strip())

    # 2. the docker CLI with the context the agent made
    env = dict(vm.env)
    env.pop("DOCKER_HOST", None)
    docker_cli = [DOCKER, "--context", "pydesk"]

    def run_docker(*args: str, input: bytes | None = None) -> bytes:
        done = subprocess.run([*docker_cli, *args], env=env, input=input, capture_output=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    assert run_docker("run", "--rm", "-i", "busybox", "sh", "-c", 'read line; echo "got $line"',
                      input=b"through the proxy\n") == b"got through the proxy\n"
    with under_pty([*docker_cli, "run", "-it", "--rm", "busybox", "sh"], env) as (proc, fd):
        assert b"#" in read_until(fd, b"# ", timeout=60)
        os.write(fd, b"echo $((6*7)); exit 3\r")
        assert b"42" in read_until(fd, b"42", timeout=30)
        assert proc.wait(timeout=30) == 3
    printer = run_docker("run", "-d", "busybox", "sh", "-c",
                         "for i in 1 2 3; do echo line $i; sleep 0.3; done").decode().strip()
    assert run_docker("logs", "-f", printer) == b"line 1\nline 2\nline 3\n"
    with under_pty([*docker_cli, "exec", "-it", measured.container, "sh"], env) as (proc, fd):
        assert b"#" in read_until(fd, b"# ", timeout=60)
        os.write(fd, b"ls /www; exit 5\r")
        assert b"index.html" in read_until(fd, b"index.html", timeout=30)
        assert proc.wait(timeout=30) == 5
    (tmp_path / "to-ctr.txt").write_text("copied in\n")
    run_docker("cp", str(tmp_path / "to-ctr.txt"), f"{printer}:/tmp/in.txt")
    run_docker("cp", f"{printer}:/tmp/in.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "copied in\n"
    run_docker("rm", printer)

    # 3. docker-py and Testcontainers on the host socket
    client = docker.DockerClient(base_url=f"unix://{sock}")
    try:
        assert client.containers.run("busybox", ["echo", "docker-py"],
                                     remove=True) == b"docker-py\n"
    finally:
        client.close()
    assert run_testcontainers(sys.executable, f"unix://{sock}",
                              "busybox") == "served-by-testcontainers\n"

    # 4. the agent killed: the containers keep running; a new agent adopts the VM and brings
    # forwarding and sync back, sending only what changed
    agent = find_agent(vm.files)
    qemu = find_qemu(vm.files)
    assert agent is not None and qemu is not None
    agent.kill()
    agent.wait(10)
    assert qemu.is_running()
    (site / "index.html").write_text("changed while the agent was down\n")
    started = vm.cli("vm", "start")
    assert "adopt" in started.stderr, started.stderr
    adopted = find_qemu(vm.files)
    assert adopted is not None and adopted.pid == qemu.pid
    url = f"http://localhost:{port}/index.html"
    wait_for(lambda: fetch(url) == "changed while the agent was down\n", 60, step=0.1)
    # the site holds index.html and from-ctr.txt: only the edited file crosses again
    resumed = wait_for(lambda: any("resumed (live): 1 changed entries sent" in line
                                   for line in vm.files.status.read_text().splitlines()), 60)
    assert resumed < 60, vm.files.status.read_text()[-3000:]
    (site / "index.html").write_text("after the restart\n")
    wait_for(lambda: fetch(url) == "after the restart\n", 5, step=0.05)

    vm.cli("vm", "stop")
    assert not sock.exists()
    assert vm.qemu() is None
