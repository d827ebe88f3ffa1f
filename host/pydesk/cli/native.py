"""The native engine of passthrough mode: ``pydesk engine start|stop`` run a pydeskd on this Linux
host, in the background, with its socket where passthrough looks (``/run/pydesk/docker.sock``).

What it is for: the command line and the files are pure (:class:`NativePaths`,
:func:`daemon_argv`, :func:`is_pydeskd`); the process is started and signalled through
:class:`Spawner`, the one seam, whose real side is :func:`spawn_detached`. The daemon writes its
own pidfile (``<exec-root>/pydeskd.pid``, removed on a clean exit): ``stop`` signals only the
process that pidfile names, and only when that process is a pydeskd.
What it must never do: start a daemon the user did not ask for (the CLI asks first unless
``--yes``), or signal a process it cannot show is the pydeskd it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_ROOT = Path("/var/lib/pydesk")
DEFAULT_EXEC_ROOT = Path("/run/pydesk")


@dataclass(frozen=True)
class NativePaths:
    """Where the native daemon keeps its state; the socket is the passthrough socket when the
    exec root is the default one."""

    data_root: Path = DEFAULT_DATA_ROOT
    exec_root: Path = DEFAULT_EXEC_ROOT
    config_file: Path | None = None

    @property
    def socket(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.exec_root / "pydeskd.pid"

    @property
    def log(self) -> Path:
        """The daemon's stdout and stderr (appended; kept across starts until reboot)."""
        return self.exec_root / "pydeskd.log"


def pydeskd_program(executable: str = sys.executable) -> list[str]:
    """The pydeskd beside this interpreter (same virtualenv), else the one on PATH."""
    sibling = Path(executable).with_name("pydeskd")
    if sibling.exists():
        return [str(sibling)]
    found = shutil.which("pydeskd")
    return [found] if found else [executable, "-m", "pydeskd.daemon.main"]


def daemon_argv(program: list[str], paths: NativePaths) -> list[str]:
    """pydeskd's command line (dockerd's flags) for ``paths``."""
    argv = [*program, "-H", f"unix://{paths.socket}", "--data-root", str(paths.data_root),
            "--exec-root", str(paths.exec_root), "--pidfile", str(paths.pidfile)]
    if paths.config_file is not None:
        argv += ["--config-file", str(paths.config_file)]
    return argv


def is_pydeskd(cmdline: list[str]) -> bool:
    """Whether a process's command line is a pydeskd (the console script, or ``-m``)."""
    return any(Path(arg).name == "pydeskd" or arg.startswith("pydeskd.daemon")
               for arg in cmdline[:3])


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def cmdline_of(pid: int) -> list[str]:
    """A process's argv ([] when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def child_exited(pid: int) -> bool:
    """Whether our own child ``pid`` has exited (reaped here). /proc/PID/cmdline cannot tell:
    measured here, it reads empty for a moment right after the exec of a live child."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not cmdline_of(pid)
    return done == pid


@dataclass(frozen=True)
class Spawner:
    """The seam: start a detached process (its pid), tell whether that child exited, read a
    process's argv, signal it."""

    spawn: Callable[[list[str], Path], int]
    cmdline: Callable[[int], list[str]] = cmdline_of
    kill: Callable[[int, int], None] = os.kill
    exited: Callable[[int], bool] = child_exited


def spawn_detached(argv: list[str], log: Path) -> int:
    """Starts ``argv`` in its own session, stdio to ``log``; it outlives this CLI."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    return proc.pid


class NativeError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def start(paths: NativePaths, ping: Callable[[Path], bool], spawner: Spawner, *,
          program: list[str], timeout: float = 30.0, poll: float = 0.1) -> int:
    """Starts pydeskd and waits until its socket answers; its pid. NativeError when it exits or
    does not answer in time (the log's tail in the message)."""
    try:
        log_offset = paths.log.stat().st_size  # the log is appended to: show this run's lines
    except FileNotFoundError:
        log_offset = 0
    pid = spawner.spawn(daemon_argv(program, paths), paths.log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(paths.socket):
            return pid
        if spawner.exited(pid):
            raise NativeError(f"pydeskd exited at once:\n{log_tail(paths.log, log_offset)}",
                              f"its log: {paths.log}")
        time.sleep(poll)
    raise NativeError(f"pydeskd (pid {pid}) does not answer on {paths.socket} after "
                      f"{timeout:g}s", f"its log: {paths.log}; stop it: pydesk engine stop")


def stop(paths: NativePaths, spawner: Spawner, *, timeout: float = 30.0,
         poll: float = 0.1) -> int | None:
    """SIGTERM to the pydeskd of ``paths``'s pidfile, SIGKILL after ``timeout``; its pid, or
    None when none runs (a stale pidfile is left to the next start, which replaces it)."""
    pid = read_pid(paths.pidfile)
    if pid is None or not is_pydeskd(spawner.cmdline(pid)):
        return None
    spawner.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not spawner.cmdline(pid):
            return pid
        time.sleep(poll)
    spawner.kill(pid, signal.SIGKILL)
    return pid


def log_tail(log: Path, offset: int = 0, lines: int = 15) -> str:
    """The last ``lines`` lines written to ``log`` after ``offset``."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing in the log)"
