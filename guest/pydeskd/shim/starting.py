"""The caller's side of starting a shim: checks, one spawn, and the shim's report on a pipe.

Every container start waits for this, so only one new interpreter starts here: the caller
(the daemon, or ``pydesk-shim start``) spawns :mod:`pydeskd.shim.serve` directly, in a new
session with no fds of the caller's but the report pipe's write end, stdio on /dev/null and
``shim.log``. The shim forks once at its very start (before any thread or import) and its first
process exits: the caller reaps that at once, and the shim itself is reparented to init, out of
the caller's process tree, so killing the caller (even with -9) leaves it alone and the caller
never holds a zombie or a thread per shim.

The report is one JSON object: ``{"ok": true, "socket": ...}`` once the container is created
and the control socket serves, else ``{"ok": false, "error": <the runtime's message>}`` with
nothing of the shim's left. This module must never wait for the shim itself, only for its
first process.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from pydeskd.shim.paths import MAX_SOCKET_PATH, StatePaths
from pydeskd.shim.runtime import DEFAULT_ROOT, Runtime, default_runtime

_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from pydeskd.shim.serve import main; main(sys.argv[2:])")


class ShimStartError(Exception):
    """The shim could not start; the message is the shim's (usually the runtime's) error."""


class ShimUsageError(ShimStartError):
    """The arguments were refused before anything was started."""


def serve_command() -> list[str]:
    """The shim's command line: this interpreter, isolated (-I -S: no site, ~10 ms less),
    with the directory this package is imported from as its only addition to the path."""
    guest = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [sys.executable, "-I", "-S", "-c", _BOOT, guest]


def start(cid: str, bundle: Path, state_dir: Path, *, runtime: Path | None = None,
          runtime_root: Path | None = None, stdin: bool = False, log_path: Path | None = None,
          log_max_size: int = 0, log_max_files: int = 1, debug: bool = False,
          timeout: float = 120.0) -> Path:
    """Creates the container under a new detached shim; returns its control socket's path.
    Raises ShimUsageError (nothing started) or ShimStartError."""
    bundle, state_dir = bundle.absolute(), state_dir.absolute()
    paths = StatePaths(state_dir)
    _check(bundle, paths, log_max_size, log_max_files)
    tty = _terminal_requested(bundle)
    made_dir = not state_dir.exists()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = {
        "id": cid, "bundle": str(bundle), "state_dir": str(state_dir),
        "runtime": str((runtime or default_runtime()).absolute()),
        "runtime_root": str((runtime_root or DEFAULT_ROOT).absolute()), "stdin": stdin,
        "log_path": str(log_path.absolute()) if log_path else None,
        "log_max_size": log_max_size, "log_max_files": log_max_files, "debug": debug,
        # What a failed start removes: the state dir if it made it, else only new entries.
        "made_dir": made_dir, "keep": sorted(os.listdir(state_dir)),
        "log_made": log_path is not None and not log_path.exists(),
    }
    ready_r, ready_w = os.pipe()
    try:
        err = os.open(paths.shim_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                      0o600)
        try:
            first = subprocess.Popen(
                [*serve_command(), *serve_argv(ready_w, tty, config)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err, pass_fds=(ready_w,), close_fds=True,
                start_new_session=True, cwd="/")
        finally:
            os.close(err)
    except OSError as e:
        os.close(ready_r)
        os.close(ready_w)
        _remove_new(paths, config)
        raise ShimStartError(f"cannot start the shim: {e}") from None
    os.close(ready_w)
    try:
        report = _read_report(ready_r, timeout)
    finally:
        os.close(ready_r)
        _reap(first)
    try:
        result = json.loads(report)
    except ValueError:
        raise ShimStartError(
            f"the shim died before it was ready (see {paths.shim_log})"
            if paths.shim_log.exists() else "the shim died") from None
    if not result.get("ok"):
        raise ShimStartError(str(result.get("error")))
    return Path(result["socket"])


def serve_argv(ready_w: int, tty: bool, config: dict[str, object]) -> list[str]:
    """The shim's arguments (read by :func:`pydeskd.shim.serve.main`): the report pipe, the
    stdio mode, the bundle, ``runtime create``'s argv (its length first) and the config in
    JSON. The shim spawns that argv before it imports anything (json included)."""
    paths = StatePaths(Path(str(config["state_dir"])))
    runtime = Runtime(Path(str(config["runtime"])), Path(str(config["runtime_root"])),
                      paths.runtime_log)
    create = runtime.create(str(config["id"]), Path(str(config["bundle"])), paths.init_pid,
                            paths.console_socket(0) if tty else None)
    mode = "tty" if tty else "stdin" if config["stdin"] else "pipes"
    return [str(ready_w), mode, str(config["bundle"]), str(len(create)), *create,
            json.dumps(config)]


def _terminal_requested(bundle: Path) -> bool:
    """Whether config.json asks for a terminal (then the runtime sends the shim a pty master).
    Read here, where json is loaded already, not in the shim before it spawns the runtime."""
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ShimStartError(f"cannot read {bundle / 'config.json'}: {e}") from None
    process = config.get("process") if isinstance(config, dict) else None
    return bool(isinstance(process, dict) and process.get("terminal"))


def _check(bundle: Path, paths: StatePaths, log_max_size: int, log_max_files: int) -> None:
    if not (bundle / "config.json").is_file():
        raise ShimUsageError(f"no config.json in bundle {bundle}")
    if log_max_size < 0 or log_max_files < 1:
        raise ShimUsageError("--log-max-size must be >= 0 and --log-max-files >= 1")
    if len(str(paths.console_socket(999))) > MAX_SOCKET_PATH:
        raise ShimUsageError(f"state dir path too long for unix sockets: {paths.root}")
    if _serving(paths.socket):
        raise ShimUsageError(f"a shim already serves {paths.socket}")


def _serving(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _read_report(fd: int, timeout: float) -> bytes:
    """Everything written to the pipe until every write end is closed (the shim reported, or
    died). Raises ShimStartError after ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    poller = select.poll()  # not select(): a daemon's fds go past FD_SETSIZE (1024)
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise ShimStartError(f"the shim did not report within {timeout:g} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(first: subprocess.Popen[bytes]) -> None:
    """The shim's first process exits right after its fork (serve.py): reaped here."""
    try:
        first.wait(timeout=10)
    except subprocess.TimeoutExpired:  # stuck before its fork: it never became a shim
        first.kill()
        first.wait()


def _remove_new(paths: StatePaths, config: dict[str, object]) -> None:
    """Undoes what :func:`start` made before the spawn failed."""
    import shutil

    if config["made_dir"]:
        shutil.rmtree(paths.root, ignore_errors=True)
    elif paths.shim_log.name not in config["keep"]:  # type: ignore[operator]
        paths.shim_log.unlink(missing_ok=True)
