"""The real Docker Engine (Debian's docker.io), started privately as a reference.

Benchmarks and compatibility checks compare pydesk with it; pydesk never depends on it. Each
`DockerEngine` runs its own dockerd (and the containerd it spawns) with a private data root, exec
root and socket under a temporary directory, without touching the host's network (no bridge, no
iptables rules), and removes everything when it stops: processes, mounts, files.

    with DockerEngine(mirrors=["http://127.0.0.1:5000"]) as engine:
        engine.docker("pull", "bench/big")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


class DockerEngine:
    def __init__(self, mirrors: Sequence[str] = (), insecure: Sequence[str] = (),
                 root: Path | None = None) -> None:
        # A short base path: dockerd's socket path must fit in sun_path (108 bytes).
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="pydesk-dockerd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        # Containers go under a cgroup parent of this engine's own, removed when it stops.
        self.cgroup_parent = f"/{self.root.name}"
        self.config = {"registry-mirrors": list(mirrors), "insecure-registries": list(insecure),
                       "iptables": False, "ip-masq": False, "bridge": "none",
                       "storage-driver": "overlay2", "cgroup-parent": self.cgroup_parent}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60) -> None:
        config = self.root / "daemon.json"
        config.write_text(json.dumps(self.config))
        log = (self.root / "dockerd.log").open("ab")
        self._proc = subprocess.Popen(
            [DOCKERD, "--config-file", str(config), "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid"),
             "-H", self.host],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self._proc.returncode}): {self.log_tail()}")
            if self.socket.exists() and subprocess.run(
                    [DOCKER, "-H", self.host, "version"], capture_output=True,
                    check=False).returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "dockerd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def docker(self, *args: str, input: bytes | None = None,
               check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([DOCKER, "-H", self.host, *args], input=input,
                                capture_output=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace').strip()}")
        return result

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # SIGTERM to the whole session: dockerd and the containerd it started.
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._proc is not None:
            # containerd (and any shim) may outlive dockerd by a moment.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc = None
        self._unmount_all()
        self._remove_cgroups()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _remove_cgroups(self) -> None:
        """The engine's cgroup parent in every hierarchy, children first (all empty by now)."""
        name = self.cgroup_parent.strip("/")
        for top in Path("/sys/fs/cgroup").glob(f"*/{name}"):
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()),
                                    key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def _unmount_all(self) -> None:
        prefix = str(self.root) + "/"
        with open("/proc/self/mounts") as mounts:
            targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for target in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def __enter__(self) -> DockerEngine:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
