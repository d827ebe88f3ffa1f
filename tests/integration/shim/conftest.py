"""Fixtures for the shim's integration tests: real shims over real runtimes (runc, pydesk-runc).

Every test gets a :class:`ShimEnv`: a short temporary directory (unix socket paths are limited
to 108 bytes), a runtime root, and a cgroup parent unique to the test. At the end it kills and
deletes whatever is left (containers, shims), removes the cgroup directories the runtime made
under every hierarchy, and the directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.shim.client import ShimClient, start_shim
from tests.support.busybox import base_config, make_rootfs, write_config

RUNC = Path("/usr/sbin/runc")
PYDESK_RUNC = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "pydesk-runc"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _pydesk_runc_missing() -> bool:
    return importlib.util.find_spec("pydeskd.runtime.cli") is None


RUNTIMES = [
    pytest.param(RUNC, id="runc"),
    pytest.param(PYDESK_RUNC, id="pydesk-runc", marks=pytest.mark.skipif(
        _pydesk_runc_missing(), reason="pydesk-runc's CLI (pydeskd.runtime.cli) is not there yet")),
]


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


class ShimEnv:
    def __init__(self, runtime: Path, base: Path) -> None:
        self.runtime = runtime
        self.base = base
        self.root = base / "root"
        self.cgroup_parent = f"pydesk-test-shim-{uuid.uuid4().hex[:8]}"
        self.rootfs = base / "rootfs"
        make_rootfs(self.rootfs)
        self.ids: list[str] = []
        self.state_dirs: list[Path] = []

    def new_id(self) -> str:
        cid = f"pds-{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        return cid

    def bundle(self, cid: str, args: list[str], tty: bool = False,
               console_size: tuple[int, int] | None = None) -> Path:
        """A bundle sharing the env's busybox rootfs (containers here never write to it)."""
        bundle = self.base / "b" / cid
        bundle.mkdir(parents=True)
        config = base_config(args, f"/{self.cgroup_parent}/{cid}")
        config["root"]["path"] = str(self.rootfs)
        config["process"]["terminal"] = tty
        if console_size:
            config["process"]["consoleSize"] = {"height": console_size[0],
                                                "width": console_size[1]}
        write_config(bundle, config)
        return bundle

    def state_dir(self, cid: str) -> Path:
        path = self.base / "s" / cid
        self.state_dirs.append(path)
        return path

    def start(self, args: list[str], tty: bool = False, stdin: bool = False,
              **kwargs: Any) -> tuple[str, ShimClient]:
        cid = self.new_id()
        client = start_shim(cid, self.bundle(cid, args, tty), self.state_dir(cid),
                            runtime=self.runtime, runtime_root=self.root, stdin=stdin,
                            **kwargs)
        return cid, client

    def exec_process(self, args: list[str]) -> dict[str, Any]:
        process: dict[str, Any] = base_config()["process"]
        process["args"] = args
        return process

    def cleanup(self) -> None:
        for state in self.state_dirs:
            if (state / "shim.sock").exists():
                client = ShimClient.for_state_dir(state, timeout=10)
                with contextlib.suppress(Exception):
                    client.kill(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    client.wait(timeout=10)
                with contextlib.suppress(Exception):
                    client.delete()
            info = state / "shim.json"
            with contextlib.suppress(OSError, ValueError):
                pid = json.loads(info.read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
        kill_processes_mentioning(str(self.base))  # e.g. a runtime that hung
        for cid in self.ids:
            subprocess.run([str(self.runtime), "--root", str(self.root), "delete", "--force",
                            cid],
                           capture_output=True, check=False)
        remove_cgroups(self.cgroup_parent)
        shutil.rmtree(self.base, ignore_errors=True)


def kill_processes_mentioning(text: str) -> None:
    """SIGKILLs every process (but us) whose command line contains ``text``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def remove_cgroups(parent: str) -> None:
    """rmdir the test's cgroup parent (children first) in every hierarchy; retries briefly,
    since a killed container's cgroup empties asynchronously."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / parent
        if not top.is_dir():
            continue
        for _ in range(50):
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()
            if not top.exists():
                break
            time.sleep(0.1)


def leftover_cgroups(parent: str) -> list[Path]:
    return [h / parent for h in CGROUP_ROOT.iterdir() if (h / parent).exists()]


@pytest.fixture
def env(runtime: Path) -> Iterator[ShimEnv]:
    base = Path(tempfile.mkdtemp(prefix="pds-", dir="/tmp"))
    shim_env = ShimEnv(runtime, base)
    try:
        yield shim_env
    finally:
        shim_env.cleanup()


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
