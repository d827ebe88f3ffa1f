"""A real ``pydeskd`` on a temporary socket and data root, for the integration tier.

What it is for: every API-level test starts the daemon the way users do (the ``pydeskd`` console
script with dockerd's flags) and talks to it with the official docker CLI or docker-py::

    with Pydeskd(tmp_path, config={"registry-mirrors": [...]}) as d:
        d.docker("version")                      # CompletedProcess; raises on failure
        d.client().ping()                        # docker.DockerClient on the socket

The socket lives in a short directory under /tmp (``sun_path`` holds 108 bytes; pytest's
``tmp_path`` can be longer). ``docker()`` runs the CLI with ``DOCKER_HOST`` and an empty
``DOCKER_CONFIG`` (never the user's). On a failed start, or whenever asked, ``log_tail()`` shows
the daemon's log.

What it must never do: leave anything behind: stop sends SIGTERM (then SIGKILL), kills any
process still naming the daemon's roots on its command line (shims, runtimes), unmounts whatever
is mounted under them, and removes the socket directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import docker  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
PYDESKD = REPO / ".venv" / "bin" / "pydeskd"
DOCKER = shutil.which("docker") or "/usr/bin/docker"


class PydeskdError(RuntimeError):
    pass


class Pydeskd:
    def __init__(self, tmp_dir: Path, config: Mapping[str, Any] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.tmp_dir = tmp_dir
        self.data_root = tmp_dir / "data"
        self.exec_root = tmp_dir / "exec"
        self.config_file = tmp_dir / "daemon.json"
        self.pidfile = tmp_dir / "pydeskd.pid"
        self.log_path = tmp_dir / "pydeskd.log"
        self.docker_config = tmp_dir / "docker-config"
        self.config = dict(config or {})
        # Container cgroups under a parent of this daemon's own (the same for a restart on the
        # same directory), removed when it stops: tests leave no cgroup behind.
        digest = hashlib.sha256(str(tmp_dir).encode()).hexdigest()[:10]
        self.config.setdefault("cgroup-parent", f"/pydesk-test-{digest}")
        self.extra_args = extra_args
        self.sock_dir = Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp"))
        self.socket = self.sock_dir / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[Any] = []

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def argv(self) -> list[str]:
        return [str(PYDESKD), "-H", self.host, "--data-root", str(self.data_root),
                "--exec-root", str(self.exec_root), "--config-file", str(self.config_file),
                "--pidfile", str(self.pidfile), *self.extra_args]

    def start(self, timeout: float = 30.0) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.docker_config.mkdir(exist_ok=True)
        self.config_file.write_text(json.dumps(self.config))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PydeskdError(f"pydeskd exited ({self.proc.returncode}):\n"
                                   f"{self.log_tail()}")
            if self.socket.exists() and self._ping():
                return
            time.sleep(0.05)
        self.stop()
        raise PydeskdError(f"pydeskd did not answer _ping within {timeout}s:\n"
                           f"{self.log_tail()}")

    def _ping(self) -> bool:
        import socket
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=self.host, DOCKER_CONFIG=str(self.docker_config))
        return env

    def docker(self, *args: str, input: bytes | None = None, check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """The docker CLI against this daemon; PydeskdError with output and log on failure."""
        result = subprocess.run([DOCKER, *args], input=input, capture_output=True,
                                env=self.env(), timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise PydeskdError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stderr.decode(errors='replace').strip()}\n--- pydeskd log:\n"
                f"{self.log_tail()}")
        return result

    def popen_docker(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([DOCKER, *args], env=self.env(), **kwargs)

    def client(self, **kwargs: Any) -> Any:
        """A docker-py ``DockerClient`` on the socket (closed at stop)."""
        client = docker.DockerClient(base_url=self.host, **kwargs)
        self._clients.append(client)
        return client

    def remove_containers(self, volumes: bool = False) -> None:
        """``docker rm -f [-v]`` of every container, if the daemon still runs (a cleanup)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *(["-v"] if volumes else []),
                        *(i.decode() for i in ids), check=False)

    def stop(self, timeout: float = 20.0) -> int | None:
        """Stop the daemon; returns its exit code (None if it was not running)."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    sys.stderr.write(f"pydeskd ignored SIGTERM:\n{self.log_tail()}\n")
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
            self.proc = None
        self._kill_leftovers()
        self._network_teardown()
        self._unmount_all()
        self._remove_empty_cgroups()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        return code

    def _network_teardown(self) -> None:
        """The daemon's bridges, veths, netns files, port proxies and firewall chains (its
        names derive from its data root, so other daemons' are untouched)."""
        from pydeskd.network.cleanup import teardown
        try:
            teardown(self.data_root, self.exec_root)
        except Exception as exc:  # a cleanup failure must not hide the test's own result
            sys.stderr.write(f"network teardown of {self.data_root} failed: {exc}\n")

    def _remove_empty_cgroups(self) -> None:
        """The daemon's cgroup parent, children first, in every hierarchy: one pass, empty
        directories only (a container left running keeps its own)."""
        name = str(self.config["cgroup-parent"]).strip("/")
        for top in Path("/sys/fs/cgroup").glob(f"*/{name}"):
            if top.parent.is_symlink():
                continue  # cpu,cpuacct aliases
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for directory in [*dirs, top]:
                with contextlib.suppress(OSError):
                    directory.rmdir()

    def _kill_leftovers(self) -> None:
        """Shims and runtimes run detached from the daemon; anything naming our roots goes,
        and so does every process in the daemon's cgroup parent (containers still running
        when the daemon stopped: live restore keeps them, a test must not)."""
        name = str(self.config["cgroup-parent"]).strip("/")

        def members() -> list[int]:
            found: list[int] = []
            for procs in Path("/sys/fs/cgroup").glob(f"*/{name}/**/cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    found += [int(pid) for pid in procs.read_text().split()]
            return found

        deadline = time.monotonic() + 10
        while (pids := members()) and time.monotonic() < deadline:
            for pid in set(pids):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)  # until they are gone: their cgroups are removed next
        roots = (str(self.data_root), str(self.exec_root))
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if any(root in cmdline for root in roots):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def _unmount_all(self) -> None:
        prefix = str(self.tmp_dir) + "/"
        with open("/proc/self/mounts") as mounts:
            targets = [line.split()[1] for line in mounts
                       if line.split()[1].startswith(prefix)]
        for target in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def __enter__(self) -> Pydeskd:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is not None:
            sys.stderr.write(f"--- pydeskd log:\n{self.log_tail()}\n")
        self.stop()
