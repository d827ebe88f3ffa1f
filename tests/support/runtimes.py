"""Driving OCI runtimes (runc, pydesk-runc) from tests and benchmarks, and cleaning up after.

A `Runtime` is one runtime binary with a private `--root` state directory, so that tests never
see or touch containers of anyone else on the machine. Every command runs with a timeout and
its stdout/stderr go to temporary files, not pipes: a container init that inherits the
runtime's stdio must not keep the test waiting for an EOF that never comes.

This module must never touch a container, cgroup, mount or process that the caller did not
create: every cleanup step is keyed by a container id or a cgroups path that the caller owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNC = Path("/usr/sbin/runc")
PYDESK_RUNC = Path(sys.executable).parent / "pydesk-runc"
# The reference first: parametrized test ids read "runc" then "pydesk-runc".
RUNTIMES: dict[str, Path] = {"runc": RUNC, "pydesk-runc": PYDESK_RUNC}

CGROUP_ROOT = Path("/sys/fs/cgroup")
TIMEOUT = 30.0


def token() -> str:
    """A short unique name part, so that parallel tests and agents never collide."""
    return uuid.uuid4().hex[:10]


@dataclass(frozen=True)
class Result:
    """What one runtime command did: exit status and captured output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (f"$ {' '.join(self.argv)}\n-> exit {self.returncode}\n"
                f"stdout: {self.stdout!r}\nstderr: {self.stderr!r}")

    def check_failed_clearly(self) -> Result:
        """Returns self; raises AssertionError unless the command failed with a message that is
        not a crash (a Python traceback is not a clear message)."""
        if self.returncode == 0:
            raise AssertionError(f"command succeeded, expected a failure:\n{self.describe()}")
        if not self.stderr.strip():
            raise AssertionError(f"failed without a message:\n{self.describe()}")
        if "Traceback (most recent call last)" in self.stderr or "internal error" in self.stderr:
            raise AssertionError(f"failed with a traceback, not a message:\n{self.describe()}")
        return self

    def check(self) -> Result:
        """Returns self; raises AssertionError (with the whole command and output) on failure."""
        if self.returncode != 0:
            raise AssertionError(f"command failed:\n{self.describe()}")
        return self


def run_captured(argv: Sequence[str], *, timeout: float = TIMEOUT,
                 stdin: int | None = subprocess.DEVNULL) -> Result:
    """Runs argv to completion with stdout/stderr in temporary files; raises TimeoutExpired."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=stdin, stdout=out, stderr=err)
        returncode = wait_exact(proc, timeout)
        out.seek(0)
        err.seek(0)
        return Result(tuple(argv), returncode,
                      out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def wait_exact(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Waits for proc and returns its exit status; kills it and raises TimeoutExpired after
    timeout. A pidfd notices the exit at once, where Popen.wait(timeout) polls with sleeps of
    1, 2, 4 ... 50 ms and adds that to every runtime call."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not ready:
        proc.kill()
        proc.wait()
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait()


@dataclass
class Runtime:
    """One OCI runtime binary with its own state directory (`--root`)."""

    name: str
    binary: Path
    root: Path
    # Container ids this object created, for cleanup even when the state dir is gone or garbled.
    ids: set[str] = field(default_factory=set)

    def argv(self, *args: str) -> list[str]:
        return [str(self.binary), "--root", str(self.root), *args]

    def __call__(self, *args: str, timeout: float = TIMEOUT) -> Result:
        return run_captured(self.argv(*args), timeout=timeout)

    def run(self, container_id: str, bundle: Path, timeout: float = TIMEOUT) -> Result:
        self.ids.add(container_id)
        return self("run", "--bundle", str(bundle), container_id, timeout=timeout)

    def create(self, container_id: str, bundle: Path, pid_file: Path | None = None) -> Result:
        self.ids.add(container_id)
        extra = ["--pid-file", str(pid_file)] if pid_file is not None else []
        return self("create", "--bundle", str(bundle), *extra, container_id)

    def state(self, container_id: str) -> dict[str, Any]:
        """The runtime-spec state; raises AssertionError if the command fails."""
        result = self("state", container_id).check()
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    def wait_status(self, container_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        """Polls `state` until it reports `status`; raises AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(container_id)
            if state.get("status") == status:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{container_id} still {state.get('status')!r}, "
                                     f"wanted {status!r}: {state}")
            time.sleep(0.05)

    def known_ids(self) -> set[str]:
        ids = set(self.ids)
        if self.root.is_dir():
            ids.update(p.name for p in self.root.iterdir() if p.is_dir())
        return ids

    def cleanup(self) -> None:
        """Force-deletes every container this object knows of, then removes its state dir."""
        for container_id in sorted(self.known_ids()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self("delete", "--force", container_id, timeout=15)
        # A broken runtime may leave its state behind; the state dir is ours alone.
        if self.root.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False,
                           timeout=TIMEOUT)


# ---------------------------------------------------------------- cgroups

def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies: /sys/fs/cgroup alone on pure v2, else each v1 controller
    directory plus the (possibly empty) v2 mount of a hybrid layout."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    seen: set[Path] = set()
    found: list[Path] = []
    for entry in sorted(CGROUP_ROOT.iterdir()):
        # cpu,cpuacct style names are often symlinks to one shared directory: visit it once.
        real = entry.resolve()
        if real.is_dir() and real not in seen and (real / "cgroup.procs").exists():
            seen.add(real)
            found.append(real)
    return found


def cgroup_dirs(cgroups_path: str) -> list[Path]:
    """Every existing directory for cgroups_path (absolute, as in config.json) in any hierarchy."""
    rel = cgroups_path.strip("/")
    return [h / rel for h in cgroup_hierarchies() if (h / rel).is_dir()]


def cgroup_pids(cgroups_path: str) -> set[int]:
    """Pids in cgroups_path or below, in any hierarchy."""
    pids: set[int] = set()
    for top in cgroup_dirs(cgroups_path):
        for dirpath, _dirs, _files in os.walk(top):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
    return pids


def remove_cgroup(cgroups_path: str, timeout: float = 10.0) -> None:
    """Kills what is left in cgroups_path, removes its directories bottom-up in every hierarchy,
    then its parents up to the first path component (the test-owned prefix), when empty."""
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(cgroups_path):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        reap_children()
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {sorted(pids)} survive in cgroup {cgroups_path}")
        time.sleep(0.05)
    parts = cgroups_path.strip("/").split("/")
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / parts[0]
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(hierarchy / "/".join(parts), topdown=False):
            _rmdir_retry(Path(dirpath), deadline)
        for depth in range(len(parts) - 1, 0, -1):
            parent = hierarchy.joinpath(*parts[:depth])
            # Only when empty: a parent may be shared by containers of the same test.
            if parent.is_dir() and not any(p.is_dir() for p in parent.iterdir()):
                _rmdir_retry(parent, deadline)


def _rmdir_retry(path: Path, deadline: float) -> None:
    # A cgroup stays busy (EBUSY) for a moment after its last task exits.
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---------------------------------------------------------------- processes and mounts

def set_child_subreaper(enabled: bool = True) -> None:
    """Makes this process the reaper of orphaned descendants (container inits after `create`),
    or, with enabled=False, stops being one."""
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, int(enabled), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def reap_children() -> None:
    """Reaps every exited child (orphans inherited as a subreaper); never blocks."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def mounts_mentioning(needles: Iterable[str]) -> list[str]:
    """Lines of this mount namespace's mount table that mention any of the needles."""
    needles = [n for n in needles if n]
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [line for line in lines if any(n in line for n in needles)]


def unmount_all(needles: Iterable[str]) -> None:
    """Lazily unmounts every mount mentioning a needle: the fallback for a runtime that leaked."""
    for line in reversed(mounts_mentioning(needles)):
        target = line.split()[1].encode().decode("unicode_escape")
        subprocess.run(["umount", "-l", target], check=False, timeout=TIMEOUT,
                       capture_output=True)
