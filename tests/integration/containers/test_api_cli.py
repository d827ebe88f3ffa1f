"""The container routes under the official docker CLI: a daemon stand-in (the real Daemon with a
ContainerService attached, served by the real HTTP front in a thread) on a short socket.

It stands in for pydeskd's own composition of the container service (the daemon's entry point
does not attach one yet), so these tests prove the routes and the service together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.api.app import create_app, hijack_routes
from pydeskd.api.server import HttpFront
from pydeskd.daemon.config import DaemonConfig
from pydeskd.daemon.containers.context import ServicePaths
from pydeskd.daemon.containers.service import ContainerService
from pydeskd.daemon.daemon import Daemon
from tests.integration.containers.conftest import _unmount_under
from tests.integration.shim.conftest import PYDESK_RUNC, kill_processes_mentioning, remove_cgroups
from tests.support.images import build_single

DOCKER = shutil.which("docker") or "/usr/bin/docker"


class CliDaemon:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pdk-", dir="/tmp"))
        self.socket = self.base / "docker.sock"
        config = DaemonConfig(data_root=self.base / "d", exec_root=self.base / "x")
        self.daemon = Daemon.create(config)
        loaded = self.daemon.images.import_layout(self._layout())
        self.daemon.images.tag(loaded[0].id, "busybox:latest")
        self.cgroup_parent = f"/pydesk-test-cli-{os.getpid()}"
        self.daemon.containers = ContainerService(
            self.daemon.images, self.daemon.events,
            ServicePaths(config.data_root, config.exec_root, runtime=PYDESK_RUNC,
                         cgroup_parent=self.cgroup_parent, durable=False))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _layout(self) -> Path:
        build_single(self.base / "layout")
        return self.base / "layout"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.front = HttpFront(create_app(self.daemon), hijack_routes())
        self.loop.run_until_complete(self.front.listen_unix(self.socket, group=None))
        self.ready.set()
        self.loop.run_forever()

    def docker(self, *args: str, check: bool = True, input: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}",
               "DOCKER_CONFIG": str(self.base / "cfg")}
        done = subprocess.run([DOCKER, *args], capture_output=True, text=True, env=env,
                              input=input, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done

    def close(self) -> None:
        svc = self.daemon.containers
        for c in svc.store.all():
            with contextlib.suppress(Exception):  # cleanup: the rest still runs
                svc.remove(c.id, force=True, volumes=True)
        fut = asyncio.run_coroutine_threadsafe(self.front.shutdown(1.0), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.daemon.close()
        kill_processes_mentioning(str(self.base))
        _unmount_under(self.base)
        remove_cgroups(self.cgroup_parent.strip("/"))
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def cli() -> Iterator[CliDaemon]:
    d = CliDaemon()
    yield d
    d.close()


def test_run_rm_exit_code_and_output(cli: CliDaemon) -> None:
    done = cli.docker("run", "--rm", "busybox", "sh", "-c", "echo hi; exit 3", check=False)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "hi\n"
    assert cli.docker("ps", "-aq").stdout == ""


def test_binary_stdin_without_a_tty_is_not_scanned_for_detach_keys(cli: CliDaemon) -> None:
    # ctrl-p ctrl-q (0x10 0x11) in the data: a detach only with a tty, as moby.
    data = os.urandom(100_000) + b"\x10\x11" + os.urandom(1000)
    env = {**os.environ, "DOCKER_HOST": f"unix://{cli.socket}",
           "DOCKER_CONFIG": str(cli.base / "cfg")}
    done = subprocess.run([DOCKER, "run", "--rm", "-i", "busybox", "cat"], input=data,
                          capture_output=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


def test_detached_lifecycle(cli: CliDaemon) -> None:
    cid = cli.docker("run", "-d", "--name", "web", "-l", "team=a", "busybox",
                     "sh", "-c", "echo started; sleep 1000").stdout.strip()
    assert len(cid) == 64
    ps = cli.docker("ps", "--format", "{{.Names}} {{.Status}}").stdout
    assert ps.startswith("web Up")
    assert cli.docker("ps", "-q", "-f", "label=team=a").stdout.strip() == cid[:12]
    assert cli.docker("inspect", "--format", "{{.State.Status}} {{.Config.Hostname}}",
                      "web").stdout.strip() == f"running {cid[:12]}"
    assert cli.docker("logs", "web").stdout == "started\n"
    assert cli.docker("exec", "-e", "X=1", "-w", "/tmp", "web", "sh", "-c",
                      "echo $X; pwd").stdout == "1\n/tmp\n"
    assert cli.docker("exec", "web", "sh", "-c", "exit 5", check=False).returncode == 5
    assert "sleep 1000" in cli.docker("top", "web").stdout
    cli.docker("pause", "web")
    assert "Paused" in cli.docker("ps", "--format", "{{.Status}}").stdout
    cli.docker("unpause", "web")
    cli.docker("rename", "web", "web2")
    cli.docker("stop", "-t", "1", "web2")
    assert cli.docker("wait", "web2").stdout.strip() == "137"
    assert "Exited (137)" in cli.docker("ps", "-a", "--format", "{{.Status}}").stdout
    cli.docker("start", "web2")
    cli.docker("kill", "web2")
    cli.docker("rm", "-f", "web2")
    assert cli.docker("ps", "-aq").stdout == ""


def test_errors(cli: CliDaemon) -> None:
    done = cli.docker("start", "nosuch", check=False)
    assert done.returncode != 0 and "No such container: nosuch" in done.stderr
    cli.docker("create", "--name", "dup", "busybox", "true")
    done = cli.docker("create", "--name", "dup", "busybox", "true", check=False)
    assert "is already in use" in done.stderr
    cli.docker("rm", "dup")


def test_stdin_logs_stats_and_mounts(cli: CliDaemon) -> None:
    done = cli.docker("run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo done >&2",
                      input="piped\n")
    assert done.stdout == "piped\n" and done.stderr == "done\n"
    cid = cli.docker("run", "-d", "busybox", "sh", "-c",
                     "for i in 1 2 3; do echo line$i; done; sleep 1000").stdout.strip()
    for _ in range(50):
        if cli.docker("logs", cid).stdout.count("line") == 3:
            break
    assert cli.docker("logs", "--tail", "1", cid).stdout == "line3\n"
    stamped = cli.docker("logs", "-t", "--tail", "1", cid).stdout
    assert stamped.endswith("Z line3\n") and stamped[:4].isdigit()
    assert cli.docker("logs", "--since", "2000-01-01T00:00:00Z", cid).stdout.count("line") == 3
    stats = cli.docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", cid)
    assert stats.stdout.strip().endswith(" 1")
    cli.docker("rm", "-f", cid)
    host_dir = cli.base / "hostdir"
    cli.docker("run", "--rm", "-v", f"{host_dir}:/dir", "-v", "vol1:/data", "busybox", "sh",
               "-c", "echo from-container > /dir/f; echo kept > /data/k")
    assert (host_dir / "f").read_text() == "from-container\n"
    assert cli.docker("run", "--rm", "-v", "vol1:/data", "busybox", "cat",
                      "/data/k").stdout == "kept\n"
    ro = cli.docker("run", "--rm", "--read-only", "busybox", "touch", "/x", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    assert cli.docker("run", "--rm", "--user", "65534", "-w", "/tmp", "busybox", "sh", "-c",
                      "id -u; pwd").stdout == "65534\n/tmp\n"
    assert cli.docker("run", "--rm", "--entrypoint", "echo", "busybox",
                      "hi").stdout == "hi\n"


def test_run_it_through_a_pty(cli: CliDaemon) -> None:
    import pty
    import select
    import time

    env = {**os.environ, "DOCKER_HOST": f"unix://{cli.socket}",
           "DOCKER_CONFIG": str(cli.base / "cfg")}
    master, slave = pty.openpty()
    proc = subprocess.Popen([DOCKER, "run", "-it", "--rm", "busybox", "sh"], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = b""

    def read_until(text: bytes, timeout: float = 20) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    return

    try:
        read_until(b"# ")
        os.write(master, b"echo $((6*7))\r")
        read_until(b"42")
        assert b"42" in seen
        os.write(master, b"exit 3\r")
        assert proc.wait(20) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_restart_always_via_cli(cli: CliDaemon) -> None:
    import time

    cid = cli.docker("run", "-d", "--restart", "always", "busybox", "sleep",
                     "1000").stdout.strip()
    pid = int(cli.docker("inspect", "--format", "{{.State.Pid}}", cid).stdout)
    os.kill(pid, 9)
    deadline = time.monotonic() + 20
    new_pid = pid
    while time.monotonic() < deadline and new_pid in (pid, 0):
        time.sleep(0.1)
        new_pid = int(cli.docker("inspect", "--format", "{{.State.Pid}}", cid).stdout)
    assert new_pid not in (pid, 0)
    assert cli.docker("inspect", "--format", "{{.RestartCount}}", cid).stdout.strip() == "1"
    cli.docker("rm", "-f", cid)


def test_docker_py(cli: CliDaemon) -> None:
    import docker  # type: ignore[import-untyped]

    client = docker.DockerClient(base_url=f"unix://{cli.socket}")
    try:
        out = client.containers.run("busybox", ["sh", "-c", "echo py"], remove=True)
        assert out == b"py\n"
        c = client.containers.run("busybox", ["sh", "-c", "echo a; echo b >&2; sleep 1000"],
                                  detach=True, labels={"py": "1"})
        assert [x.id for x in client.containers.list(filters={"label": "py=1"})] == [c.id]
        code, (stdout, stderr) = c.exec_run(["sh", "-c", "echo o; echo e >&2; exit 4"],
                                            demux=True)
        assert (code, stdout, stderr) == (4, b"o\n", b"e\n")
        stream = c.exec_run(["sh", "-c", "echo 1; echo 2 >&2"], stream=True, demux=True)
        got = list(stream.output)
        assert (b"1\n", None) in got and (None, b"2\n") in got
        for _ in range(50):
            if c.logs() == b"a\nb\n" or c.logs() == b"b\na\n":
                break
        assert sorted(c.logs(stream=False).split()) == [b"a", b"b"]
        c.stop(timeout=1)
        assert c.wait()["StatusCode"] == 137
        c.remove()
    finally:
        client.close()


def test_limits_enforced(cli: CliDaemon) -> None:
    done = cli.docker("run", "--rm", "--pids-limit", "5", "busybox", "sh", "-c",
                      "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait", check=False)
    assert done.returncode != 0 and "can't fork" in done.stderr
    done = cli.docker("run", "--name", "oom", "--memory", "16m", "busybox", "sh", "-c",
                      "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived",
                      check=False)
    assert done.returncode == 137 and "survived" not in done.stdout
    assert cli.docker("inspect", "--format", "{{.State.OOMKilled}}",
                      "oom").stdout.strip() == "true"
    cli.docker("rm", "oom")
    done = cli.docker("run", "--rm", "--cap-drop", "ALL", "busybox", "sh", "-c",
                      "chown 1 /tmp", check=False)
    assert done.returncode == 1 and "Operation not permitted" in done.stderr


def test_a_start_that_fails(cli: CliDaemon) -> None:
    done = cli.docker("run", "--rm", "busybox", "nosuchcommand", check=False, timeout=30)
    assert done.returncode == 127 and "executable file not found" in done.stderr
    assert cli.docker("ps", "-aq").stdout == ""  # --rm removed it
    done = cli.docker("run", "--name", "kept", "busybox", "nosuchcommand", check=False,
                      timeout=30)
    assert done.returncode == 127
    assert cli.docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                      "kept").stdout.strip() == "created 127"
    cli.docker("rm", "kept")
