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
