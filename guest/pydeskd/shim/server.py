"""The shim's core: one container's processes, their state machine, and the runtime calls.

``Shim.create()`` finishes the ``runtime create`` that :mod:`pydeskd.shim.launch` started (the
container's stdio: pipes, or a pty received on the console socket); the public methods are the
protocol's (:mod:`pydeskd.shim.control`
maps requests onto them). Exits arrive as :mod:`pydeskd.shim.children` callbacks: drain the
output into the log, then record the status (on disk, atomically, for the init), then wake the
waiters. A process's status only moves forward; an illegal step raises ShimError(CONFLICT).
This module must never wait for a child itself, nor let a client stall the container.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydeskd.shim import diag
from pydeskd.shim import protocol as p
from pydeskd.shim.children import Children
from pydeskd.shim.console import ConsoleError, console_socket, receive_master
from pydeskd.shim.console import close as close_console
from pydeskd.shim.forkserver import ForkClient, ForkServerGone
from pydeskd.shim.jsonlog import JsonFileLog, rfc3339nano
from pydeskd.shim.launch import CreateFailed, Launch, ShimConfig, runtime_for
from pydeskd.shim.paths import StatePaths, atomic_write
from pydeskd.shim.process import Process
from pydeskd.shim.runtime import error_message
from pydeskd.shim.stdio import Fanout, OutputPump

RUNTIME_TIMEOUT = 60.0
DRAIN_TIMEOUT = 5.0  # after an exit, how long output may keep flowing before it is reported
EXEC_FAILED = 126    # Docker's code for an exec the runtime could not start


class Shim:
    def __init__(self, config: ShimConfig, children: Children,
                 forks: ForkClient | None = None) -> None:
        self.config = config
        # pydesk-runc exec through the fork server (forkserver.py): no interpreter per exec.
        self.forks = forks
        self.paths = StatePaths(config.state_dir)
        self.children = children
        self.runtime = runtime_for(config)
        self._lock = threading.Lock()
        self._procs: dict[str | None, Process] = {}
        self._events: list[p.Event] = []
        self._next_n = 1
        self._starting: set[int] = set()  # processes whose start is under way
        self._log: JsonFileLog | None = None
        self.done = threading.Event()  # set once deleted: the shim exits

    # --- creation -----------------------------------------------------------------------------

    def create(self, launch: Launch) -> None:
        """Finishes the ``runtime create`` that :func:`~pydeskd.shim.launch.spawn_create`
        started: takes over its stdio, waits for it, learns the init's pid. On failure nothing
        this shim made is left. Raises CreateFailed."""
        cfg = self.config
        console_path = self.paths.console_socket(0)
        # Cleaned up after a failure: only a container this shim made. A runtime that fails
        # cleans up after itself, and its failure may be "that id exists": not ours to delete.
        made = True  # until the runtime says otherwise (a timeout leaves it unsure)
        init = self._new_process(0, None, launch.tty, None)
        try:
            self._log = JsonFileLog(cfg.log_path or self.paths.default_log, cfg.log_max_size,
                                    cfg.log_max_files)
            init.pump = OutputPump(init.fanout, self._log)
            init.stdin_fd, launch.stdin_fd = launch.stdin_fd, None
            for stream, fd in ((p.Stream.STDOUT, launch.stdout_fd),
                               (p.Stream.STDERR, launch.stderr_fd)):
                if fd is not None:
                    init.pump.add(fd, stream)
            launch.stdout_fd = launch.stderr_fd = None
            code = self.children.finish(launch.child, RUNTIME_TIMEOUT)
            if code != 0:
                made = False
                message = error_message(_read_from(self.paths.runtime_log, launch.log_offset))
                diag.warning("runtime create exited %d: %s", code, message)
                raise CreateFailed(message)
            if launch.console is not None:
                init.master_fd = receive_master(launch.console)
                init.pump.add(init.master_fd, p.Stream.STDOUT, close=False)
            init.pid = _read_pid(self.paths.init_pid)
        except BaseException as e:
            launch.close()
            if made:
                self._runtime_cleanup()
            init.close_fds()
            if isinstance(e, ConsoleError | OSError):
                raise CreateFailed(str(e)) from e
            raise
        finally:
            if launch.console is not None:
                close_console(launch.console, console_path)
                launch.console = None
        with self._lock:
            self._procs[None] = init
            self._event(p.EventType.CREATE)
        self.children.watch(init.pid, lambda c: self._on_exit(init, c), launch.since)

    def _new_process(self, n: int, exec_id: str | None, tty: bool,
                     logfile: JsonFileLog | None) -> Process:
        fanout = Fanout(framed=not tty)
        return Process(n=n, cid=self.config.id, exec_id=exec_id, tty=tty, fanout=fanout,
                       pump=OutputPump(fanout, logfile))

    def _child_stdio(self, proc: Process, with_stdin: bool) -> None:
        """The ends the runtime hands to the process, in ``proc.child_fds``: pipes for a
        non-tty process (their pumps started), /dev/null with a tty (the pty is its stdio)."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if proc.tty:
            proc.child_fds = {"stdin": null, "stdout": null, "stderr": null}
            return
        proc.child_fds = {"stdin": null}
        if with_stdin:
            proc.child_fds["stdin"], proc.stdin_fd = os.pipe()
            os.close(null)
        out_r, proc.child_fds["stdout"] = os.pipe()
        err_r, proc.child_fds["stderr"] = os.pipe()
        proc.pump.add(out_r, p.Stream.STDOUT)
        proc.pump.add(err_r, p.Stream.STDERR)

    def _run_runtime(self, proc: Process, argv: list[str]) -> tuple[int, str, float]:
        """Runs a runtime command that hands ``proc.child_fds`` to a container process, then
        closes our copies. Returns (exit code, error message, monotonic start)."""
        offset = _size(self.paths.runtime_log)
        since = time.monotonic()
        fds = proc.child_fds
        code = self._run_forked(argv, (fds["stdin"], fds["stdout"], fds["stderr"]),
                                proc.close_child_fds)
        if code is None:
            child = self.children.spawn(argv, cwd=str(self.config.bundle), **proc.child_fds)
            proc.close_child_fds()
            code = self.children.finish(child, RUNTIME_TIMEOUT)
        message = error_message(_read_from(self.paths.runtime_log, offset)) if code else ""
        if code:
            diag.warning("%s exited %d: %s", " ".join(argv), code, message)
        return code, message, since

    def _run_forked(self, argv: list[str], stdio: tuple[int, int, int],
                    passed: Callable[[], None]) -> int | None:
        """The runtime's exit code through the fork server (pydesk-runc without a new
        interpreter); None when there is none or it is gone before it took the request.
        ``passed`` runs once the server holds its own copies of ``stdio``."""
        if self.forks is None:
            return None
        try:
            rid = self.forks.submit(argv[1:], str(self.config.bundle), stdio)
        except ForkServerGone as e:
            diag.warning("%s; spawning the runtime instead", e)
            self.forks = None
            return None
        passed()
        try:
            return self.forks.wait(rid, RUNTIME_TIMEOUT)
        except ForkServerGone as e:
            self.forks = None
            raise p.ShimError(p.ErrorKind.FAILED, str(e)) from None

    def _run_captured(self, argv: list[str]) -> tuple[int, bytes]:
        """(exit code, stdout+stderr) of a runtime command: through the fork server when
        there is one (start, kill and delete of every container), else a new process.
        Raises TimeoutError (the runtime killed) after RUNTIME_TIMEOUT."""
        if self.forks is not None:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            mine = [null, out_w]

            def passed() -> None:
                for fd in mine:
                    os.close(fd)
                mine.clear()

            chunks: list[bytes] = []
            reader = threading.Thread(target=_read_all, args=(out_r, chunks), daemon=True,
                                      name="runtime-output")
            reader.start()
            try:
                code = self._run_forked(argv, (null, out_w, out_w), passed)
            finally:
                passed()
                reader.join(5.0)  # EOF once the runtime exits (nothing else holds the pipe)
            if code is not None:
                return code, b"".join(chunks)
        return self.children.run(argv, timeout=RUNTIME_TIMEOUT)

    def _runtime(self, argv: list[str]) -> None:
        """Runs a runtime command to completion. Raises ShimError(FAILED) with its error."""
        offset = _size(self.paths.runtime_log)
        try:
            code, out = self._run_captured(argv)
        except TimeoutError as e:
            raise p.ShimError(p.ErrorKind.FAILED, str(e)) from None
        if code != 0:
            message = error_message(_read_from(self.paths.runtime_log, offset), out)
            diag.warning("%s exited %d: %s", " ".join(argv), code, message)
            raise p.ShimError(p.ErrorKind.FAILED, message)

    def abandon(self) -> None:
        """The shim cannot go on before it served: the container it made (if any) goes."""
        with self._lock:
            made = None in self._procs
        if made:
            self._runtime_cleanup()

    def _runtime_cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.children.run(self.runtime.delete(self.config.id, force=True), timeout=30)

    # --- exits --------------------------------------------------------------------------------

    def _on_exit(self, proc: Process, code: int) -> None:
        with self._lock:
            proc.reaped = True  # its pid is free from now on: never signal it again
        drained = proc.pump.wait(DRAIN_TIMEOUT)
        if not drained:
            diag.warning("output of %s still open %.0f s after exit", proc.exec_id or "init",
                        DRAIN_TIMEOUT)
        with proc.start_lock:  # a start under way is reported before this exit
            pass
        exited_at = rfc3339nano(time.time_ns())
        if proc.exec_id is None:
            # Recorded before anyone is told, so a daemon that was down can read it.
            atomic_write(self.paths.exit_json, {"pid": proc.pid, "exit_code": code,
                                                "exited_at": exited_at})
        with self._lock:
            proc.exit_code, proc.exited_at = code, exited_at
            proc.status = p.Status.STOPPED
            if proc.exec_id is None:
                self._event(p.EventType.EXIT, exit_code=code)
            else:
                self._event(p.EventType.EXEC_EXITED, proc.exec_id, code)
        if drained:
            proc.close_fds()
        proc.exited.set()

    def _event(self, kind: p.EventType, exec_id: str | None = None,
               exit_code: int | None = None) -> None:
        self._events.append(p.Event(kind, rfc3339nano(time.time_ns()), exec_id, exit_code))
        diag.debug("event %s %s %s", kind, exec_id or "", "" if exit_code is None else exit_code)

    # --- the protocol's methods ---------------------------------------------------------------

    def process(self, exec_id: str | None) -> Process:
        with self._lock:
            proc = self._procs.get(exec_id)
        if proc is None:
            raise p.ShimError(p.ErrorKind.NOT_FOUND, f"no exec {exec_id!r} in this container")
        return proc

    def events(self) -> list[p.Event]:
        with self._lock:
            return list(self._events)

    def state(self, exec_id: str | None) -> p.ProcessState:
        proc = self.process(exec_id)
        with self._lock:
            return proc.state()

    def wait(self, exec_id: str | None) -> p.ProcessState:
        proc = self.process(exec_id)
        proc.exited.wait()
        with self._lock:
            return proc.state()

    def start(self, exec_id: str | None) -> p.ProcessState:
        proc = self.process(exec_id)
        with self._lock:
            if proc.status is not p.Status.CREATED or proc.n in self._starting:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot start: it is {proc.status}")
            init = self._procs[None]
            if exec_id is not None and init.status is not p.Status.RUNNING:
                raise p.ShimError(p.ErrorKind.CONFLICT,
                                  f"cannot start an exec: the container is {init.status}")
            self._starting.add(proc.n)
        try:
            with proc.start_lock:
                if exec_id is None:
                    self._runtime(self.runtime.start(self.config.id))
                else:
                    self._start_exec(proc)
                with self._lock:
                    proc.status = p.Status.RUNNING
                    self._event(p.EventType.START if exec_id is None
                                else p.EventType.EXEC_STARTED, exec_id)
                    return proc.state()
        finally:
            with self._lock:
                self._starting.discard(proc.n)

    def exec(self, exec_id: str, process: dict[str, Any], tty: bool,
             stdin: bool) -> p.ProcessState:
        """Adds an exec (created): its stdio exists now, so a client can attach before start."""
        if not isinstance(process.get("args"), list) or not process["args"]:
            raise p.ShimError(p.ErrorKind.INVALID, "exec: process.args must be a non-empty list")
        spec = {**process, "terminal": tty}
        with self._lock:
            if exec_id in self._procs:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"exec id {exec_id!r} exists")
            init = self._procs[None]
            if init.status is not p.Status.RUNNING:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"the container is {init.status}")
            n, self._next_n = self._next_n, self._next_n + 1
            proc = self._new_process(n, exec_id, tty, None)
            self._procs[exec_id] = proc
        fast = self.runtime.fast_process_files
        data = marshal.dumps(spec) if fast else json.dumps(spec).encode()
        self.paths.exec_process(n, fast).write_bytes(data)
        if not tty:
            self._child_stdio(proc, stdin)
        with self._lock:
            self._event(p.EventType.EXEC_ADDED, exec_id)
            return proc.state()

    def _start_exec(self, proc: Process) -> None:
        console_path = self.paths.console_socket(proc.n) if proc.tty else None
        if proc.tty:
            self._child_stdio(proc, False)
        try:
            with console_socket(console_path) as console:
                argv = self.runtime.exec(self.config.id,
                                         self.paths.exec_process(
                                             proc.n, self.runtime.fast_process_files),
                                         self.paths.exec_pid(proc.n), console_path)
                code, out, since = self._run_runtime(proc, argv)
                if code != 0:
                    raise p.ShimError(p.ErrorKind.FAILED, f"exec failed: {out}")
                if console is not None:
                    proc.master_fd = receive_master(console)
                    proc.pump.add(proc.master_fd, p.Stream.STDOUT, close=False)
            proc.pid = _read_pid(self.paths.exec_pid(proc.n))
        except (p.ShimError, ConsoleError, CreateFailed, OSError) as e:
            self._fail_exec(proc, str(e))
            if isinstance(e, p.ShimError):
                raise
            raise p.ShimError(p.ErrorKind.FAILED, f"exec failed: {e}") from e
        self.children.watch(proc.pid, lambda c: self._on_exit(proc, c), since)

    def _fail_exec(self, proc: Process, message: str) -> None:
        """An exec the runtime refused ends as stopped with 126, as Docker reports it."""
        diag.info("exec %s failed: %s", proc.exec_id, message)
        proc.close_fds()
        proc.pump.wait(DRAIN_TIMEOUT)
        with self._lock:
            proc.status, proc.exit_code = p.Status.STOPPED, EXEC_FAILED
            proc.exited_at = rfc3339nano(time.time_ns())
            self._event(p.EventType.EXEC_EXITED, proc.exec_id, EXEC_FAILED)
        proc.exited.set()

    def kill(self, exec_id: str | None, signal: int, all_processes: bool = False) -> None:
        proc = self.process(exec_id)
        with self._lock:
            status, reaped = proc.status, proc.reaped
        if reaped or status in (p.Status.STOPPED, p.Status.DELETED):
            raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot kill: it is {p.Status.STOPPED}")
        if exec_id is None:
            self._runtime(self.runtime.kill(self.config.id, signal, all_processes))
            return
        with self._lock:
            # Checked under the lock the exit handler takes first: a reaped pid may be reused.
            if proc.status is not p.Status.RUNNING or proc.reaped or proc.pid <= 0:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot kill: it is {proc.status}")
            os.kill(proc.pid, signal)

    def delete(self, exec_id: str | None) -> p.ProcessState:
        """An exited exec is forgotten; the container is deleted by the runtime (once stopped,
        or still created), after which :meth:`remove_state` and the shim's exit follow."""
        proc = self.process(exec_id)
        with self._lock:
            status = proc.status
        if exec_id is not None:
            if status is not p.Status.STOPPED:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot delete a {status} exec")
            with self._lock:
                del self._procs[exec_id]
                proc.status = p.Status.DELETED
            for path in (self.paths.exec_process(proc.n, self.runtime.fast_process_files),
                         self.paths.exec_pid(proc.n)):
                path.unlink(missing_ok=True)
            proc.close_fds()
            return proc.state()
        if status not in (p.Status.CREATED, p.Status.STOPPED):
            raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot delete: the container is {status}")
        try:
            self._runtime(self.runtime.delete(self.config.id))
        except p.ShimError as e:
            # E.g. the runtime's state is gone (its --root was wiped): force, as a last try.
            diag.warning("delete failed (%s); retrying with --force", e.message)
            self._runtime(self.runtime.delete(self.config.id, force=True))
        proc.exited.wait(DRAIN_TIMEOUT * 2)  # a created init is killed by the delete
        with self._lock:
            proc.status = p.Status.DELETED
            self._event(p.EventType.DELETE)
            return proc.state()

    def remove_state(self) -> None:
        """After the container's delete: every fd released, the state dir removed."""
        import shutil  # only once per shim, at its end: not at start-up

        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.close_fds()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.config.state_dir, ignore_errors=True)


def _read_all(fd: int, chunks: list[bytes]) -> None:
    with open(fd, "rb", closefd=True) as f:
        chunks.append(f.read())


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise CreateFailed(f"the runtime wrote no usable pid file {path}: {e}") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
