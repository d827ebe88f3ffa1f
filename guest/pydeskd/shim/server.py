"""The shim proper: creates the container through the runtime, then serves the control socket.

One :class:`Shim` per container. ``create()`` runs ``runtime create`` with the container's stdio
(pipes, or a pty received on a console socket), ``serve()`` answers the methods of
:mod:`pydeskd.shim.protocol`, one thread per connection. Exits are handled by
:mod:`pydeskd.shim.children` callbacks: drain the output into the log, then record the status
(on disk, atomically, for the init), then wake the waiters.
This module must never wait for a child itself, nor let a client stall the container.
"""

from __future__ import annotations

import array
import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeskd.shim import protocol as p
from pydeskd.shim.children import Children
from pydeskd.shim.jsonlog import JsonFileLog, rfc3339nano
from pydeskd.shim.paths import MAX_SOCKET_PATH, StatePaths, atomic_write
from pydeskd.shim.process import Process
from pydeskd.shim.runtime import Runtime, error_message
from pydeskd.shim.stdio import Fanout, OutputPump, Subscriber

log = logging.getLogger(__name__)

RUNTIME_TIMEOUT = 60.0
DRAIN_TIMEOUT = 5.0      # after an exit, how long output may keep flowing before it is reported
CONSOLE_TIMEOUT = 10.0   # how long the runtime has to send the pty master


@dataclass(frozen=True)
class ShimConfig:
    id: str
    bundle: Path
    state_dir: Path
    runtime: Path
    runtime_root: Path
    stdin: bool = False
    log_path: Path | None = None
    log_max_size: int = 0
    log_max_files: int = 1


class CreateFailed(Exception):
    """The container could not be created; the message is the runtime's error."""


def terminal_requested(bundle: Path) -> bool:
    """Whether config.json asks for a terminal (then the runtime sends us a pty master)."""
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CreateFailed(f"cannot read {bundle / 'config.json'}: {e}") from None
    process = config.get("process") if isinstance(config, dict) else None
    return bool(isinstance(process, dict) and process.get("terminal"))


class Shim:
    def __init__(self, config: ShimConfig, children: Children) -> None:
        self.config = config
        self.paths = StatePaths(config.state_dir)
        self.children = children
        self.runtime = Runtime(config.runtime, config.runtime_root, self.paths.runtime_log)
        self._lock = threading.Lock()
        self._procs: dict[str | None, Process] = {}
        self._events: list[p.Event] = []
        self._next_n = 1
        self._starting: set[int] = set()  # processes whose start is under way
        self._log: JsonFileLog | None = None
        self.done = threading.Event()  # set once deleted: the shim exits

    # --- creation -----------------------------------------------------------------------------

    def create(self) -> None:
        """``runtime create``; on failure nothing is left running. Raises CreateFailed."""
        cfg = self.config
        tty = terminal_requested(cfg.bundle)
        self._log = JsonFileLog(cfg.log_path or self.paths.default_log, cfg.log_max_size,
                                cfg.log_max_files)
        init = self._new_process(0, None, tty, self._log)
        console = self.paths.console_socket(0) if tty else None
        listener = _console_listener(console) if console else None
        spawned = False
        try:
            self._child_stdio(init, cfg.stdin)
            argv = self.runtime.create(cfg.id, cfg.bundle, self.paths.init_pid, console)
            spawned = True
            code, out, since = self._run_runtime(init, argv)
            if code != 0:
                raise CreateFailed(out)
            if listener is not None:
                init.master_fd = _receive_fd(listener)
                init.pump.add(init.master_fd, p.Stream.STDOUT, close=False)
            init.pid = _read_pid(self.paths.init_pid)
        except BaseException:
            if spawned:  # whatever the runtime left (a half-made container) goes
                self._runtime_cleanup()
            init.close_fds()
            raise
        finally:
            if listener is not None:
                listener.close()
                with contextlib.suppress(OSError):
                    os.unlink(str(console))
        with self._lock:
            self._procs[None] = init
            self._event(p.EventType.CREATE)
        self.children.watch(init.pid, lambda c: self._on_exit(init, c), since)

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
        child = self.children.spawn(argv, cwd=str(self.config.bundle), **proc.child_fds)
        proc.close_child_fds()
        code = self.children.wait(child, RUNTIME_TIMEOUT)
        return code, (error_message(_read_from(self.paths.runtime_log, offset))
                      if code else ""), since

    def _runtime(self, argv: list[str]) -> None:
        """Runs a runtime command to completion. Raises ShimError(FAILED) with its error."""
        offset = _size(self.paths.runtime_log)
        try:
            code, out = self.children.run(argv, timeout=RUNTIME_TIMEOUT)
        except TimeoutError as e:
            raise p.ShimError(p.ErrorKind.FAILED, str(e)) from None
        if code != 0:
            raise p.ShimError(p.ErrorKind.FAILED,
                              error_message(_read_from(self.paths.runtime_log, offset), out))

    def _runtime_cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.children.run(self.runtime.delete(self.config.id, force=True), timeout=30)

    # --- exits --------------------------------------------------------------------------------

    def _on_exit(self, proc: Process, code: int) -> None:
        drained = proc.pump.wait(DRAIN_TIMEOUT)
        if not drained:
            log.warning("output of %s still open %.0f s after exit", proc.exec_id or "init",
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
        log.debug("event %s %s %s", kind, exec_id or "", "" if exit_code is None else exit_code)

    # --- serving ------------------------------------------------------------------------------

    def listen(self) -> socket.socket:
        path = str(self.paths.socket)
        if len(path) > MAX_SOCKET_PATH:
            raise CreateFailed(f"control socket path is too long for AF_UNIX: {path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)  # before listen(): nobody can connect yet
        sock.listen(64)
        return sock

    def serve(self, listener: socket.socket) -> None:
        """Accepts connections in a thread, one thread per connection."""
        def accept_loop() -> None:
            while not self.done.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=self._handle, args=(conn,), name="conn",
                                 daemon=True).start()
        threading.Thread(target=accept_loop, name="accept", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        keep_open = False
        try:
            line = _recv_line(conn)
            try:
                req = p.decode_request(line)
                result = self._dispatch(req, conn)
            except p.ProtocolError as e:
                conn.sendall(p.encode_error(p.ErrorKind.INVALID, str(e)))
                return
            except p.ShimError as e:
                conn.sendall(p.encode_error(e.kind, e.message))
                return
            except Exception as e:
                log.exception("%s failed", line[:100])
                conn.sendall(p.encode_error(p.ErrorKind.FAILED, f"{type(e).__name__}: {e}"))
                return
            if isinstance(req, p.AttachRequest):
                keep_open = True
                self._attach(req, conn)
            elif isinstance(req, p.DeleteRequest) and req.exec_id is None:
                self._finish_delete(conn, result)
            else:
                conn.sendall(p.encode_ok(result))
        except OSError as e:
            log.debug("connection: %s", e)
        finally:
            if not keep_open:
                conn.close()

    def _dispatch(self, req: p.Request, conn: socket.socket) -> dict[str, Any]:
        if isinstance(req, p.EventsRequest):
            with self._lock:
                return {"events": [_event_dict(e) for e in self._events]}
        if isinstance(req, p.ExecRequest):
            return _state_dict(self._exec(req))
        proc = self._proc(req.exec_id)
        if isinstance(req, p.StateRequest):
            with self._lock:
                return _state_dict(proc.state())
        if isinstance(req, p.StartRequest):
            return _state_dict(self._start(proc))
        if isinstance(req, p.WaitRequest):
            proc.exited.wait()
            with self._lock:
                return _state_dict(proc.state())
        if isinstance(req, p.KillRequest):
            self._kill(proc, req)
            return {}
        if isinstance(req, p.ResizeRequest):
            proc.resize(req.width, req.height)
            return {}
        if isinstance(req, p.AttachRequest):
            return {"tty": proc.tty}
        if isinstance(req, p.DeleteRequest):
            return _state_dict(self._delete(proc))
        raise p.ProtocolError(f"unhandled method {req.method}")  # pragma: no cover

    def _proc(self, exec_id: str | None) -> Process:
        with self._lock:
            proc = self._procs.get(exec_id)
        if proc is None:
            raise p.ShimError(p.ErrorKind.NOT_FOUND, f"no exec {exec_id!r} in this container")
        return proc

    # --- methods ------------------------------------------------------------------------------

    def _start(self, proc: Process) -> p.ProcessState:
        with self._lock:
            if proc.status is not p.Status.CREATED or proc.n in self._starting:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot start: it is {proc.status}")
            if proc.exec_id is not None and self._procs[None].status is not p.Status.RUNNING:
                raise p.ShimError(p.ErrorKind.CONFLICT, "cannot start an exec: the container "
                                  f"is {self._procs[None].status}")
            self._starting.add(proc.n)
        try:
            with proc.start_lock:
                if proc.exec_id is None:
                    self._runtime(self.runtime.start(self.config.id))
                else:
                    self._start_exec(proc)
                with self._lock:
                    proc.status = p.Status.RUNNING
                    self._event(p.EventType.START if proc.exec_id is None
                                else p.EventType.EXEC_STARTED, proc.exec_id)
                    return proc.state()
        finally:
            with self._lock:
                self._starting.discard(proc.n)

    def _exec(self, req: p.ExecRequest) -> p.ProcessState:
        assert req.exec_id is not None  # the protocol requires it
        process = dict(req.process)
        if not isinstance(process.get("args"), list) or not process["args"]:
            raise p.ShimError(p.ErrorKind.INVALID, "exec: process.args must be a non-empty list")
        process["terminal"] = req.tty
        with self._lock:
            if req.exec_id in self._procs:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"exec id {req.exec_id!r} exists")
            init = self._procs[None]
            if init.status is not p.Status.RUNNING:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"the container is {init.status}")
            n, self._next_n = self._next_n, self._next_n + 1
            proc = self._new_process(n, req.exec_id, req.tty, None)
            self._procs[req.exec_id] = proc
        self.paths.exec_process(n).write_text(json.dumps(process))
        if not req.tty:  # pipes now, so that a client can attach before the start
            self._child_stdio(proc, req.stdin)
        with self._lock:
            self._event(p.EventType.EXEC_ADDED, req.exec_id)
            return proc.state()

    def _start_exec(self, proc: Process) -> None:
        if proc.tty:
            self._child_stdio(proc, False)
        console = self.paths.console_socket(proc.n) if proc.tty else None
        listener = _console_listener(console) if console else None
        try:
            argv = self.runtime.exec(self.config.id, self.paths.exec_process(proc.n),
                                     self.paths.exec_pid(proc.n), console)
            code, out, since = self._run_runtime(proc, argv)
            if code != 0:
                self._fail_exec(proc, out)
                raise p.ShimError(p.ErrorKind.FAILED, f"exec failed: {out}")
            if listener is not None:
                proc.master_fd = _receive_fd(listener)
                proc.pump.add(proc.master_fd, p.Stream.STDOUT, close=False)
            proc.pid = _read_pid(self.paths.exec_pid(proc.n))
        finally:
            if listener is not None:
                listener.close()
                with contextlib.suppress(OSError):
                    os.unlink(str(console))
        self.children.watch(proc.pid, lambda c: self._on_exit(proc, c), since)

    def _fail_exec(self, proc: Process, message: str) -> None:
        """An exec the runtime refused ends as stopped with 126, as Docker reports it."""
        log.info("exec %s failed: %s", proc.exec_id, message)
        proc.close_fds()
        proc.pump.wait(DRAIN_TIMEOUT)
        with self._lock:
            proc.status, proc.exit_code = p.Status.STOPPED, 126
            proc.exited_at = rfc3339nano(time.time_ns())
            self._event(p.EventType.EXEC_EXITED, proc.exec_id, 126)
        proc.exited.set()

    def _kill(self, proc: Process, req: p.KillRequest) -> None:
        with self._lock:
            status = proc.status
        if status in (p.Status.STOPPED, p.Status.DELETED):
            raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot kill: it is {status}")
        if proc.exec_id is None:
            self._runtime(self.runtime.kill(self.config.id, req.signal, req.all))
            return
        with self._lock:
            if proc.status is not p.Status.RUNNING:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot kill: it is {proc.status}")
            # Under the lock: the exit handler cannot mark it stopped (and the pid be reused)
            # between the check and the kill... the pid stays a zombie until reaped anyway.
            os.kill(proc.pid, req.signal)

    def _delete(self, proc: Process) -> p.ProcessState:
        with self._lock:
            status = proc.status
        if proc.exec_id is not None:
            if status is not p.Status.STOPPED:
                raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot delete a {status} exec")
            with self._lock:
                del self._procs[proc.exec_id]
                proc.status = p.Status.DELETED
            for path in (self.paths.exec_process(proc.n), self.paths.exec_pid(proc.n)):
                path.unlink(missing_ok=True)
            proc.close_fds()
            return proc.state()
        if status not in (p.Status.CREATED, p.Status.STOPPED):
            raise p.ShimError(p.ErrorKind.CONFLICT, f"cannot delete: the container is {status}")
        self._runtime(self.runtime.delete(self.config.id))
        proc.exited.wait(DRAIN_TIMEOUT * 2)  # a created init is killed by the delete
        with self._lock:
            proc.status = p.Status.DELETED
            self._event(p.EventType.DELETE)
            return proc.state()

    def _finish_delete(self, conn: socket.socket, result: dict[str, Any]) -> None:
        """Removes the state dir, replies, and lets the shim exit."""
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.close_fds()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.config.state_dir, ignore_errors=True)
        try:
            conn.sendall(p.encode_ok(result))
        finally:
            self.done.set()

    def _attach(self, req: p.AttachRequest, conn: socket.socket) -> None:
        proc = self._proc(req.exec_id)
        sub = Subscriber(conn)
        proc.fanout.subscribe(sub)
        try:
            conn.sendall(p.encode_ok({"tty": proc.tty}))
            sub.start_writer()
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                if req.stdin and not proc.write_stdin(data):
                    break
            if req.stdin and not sub.closing:  # the client half-closed: stdin-once
                proc.close_stdin()
            sub.done.wait()
        except OSError:
            sub.drop()
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


# --- helpers ----------------------------------------------------------------------------------

def _console_listener(path: Path) -> socket.socket:
    if len(str(path)) > MAX_SOCKET_PATH:
        raise CreateFailed(f"console socket path is too long for AF_UNIX: {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(1)
    return sock


def _receive_fd(listener: socket.socket) -> int:
    """The pty master the runtime sent over the console socket (SCM_RIGHTS, runc's protocol).

    The runtime has connected and sent before it exited; the connection waits in the backlog.
    """
    listener.settimeout(CONSOLE_TIMEOUT)
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        raise CreateFailed("the runtime sent no terminal on the console socket") from None
    with conn:
        conn.settimeout(CONSOLE_TIMEOUT)
        fds = array.array("i")
        _msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not fds:
        raise CreateFailed("the console socket carried no file descriptor")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return fds[0]


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise CreateFailed(f"the runtime wrote no usable pid file {path}: {e}") from None


def _recv_line(conn: socket.socket) -> bytes:
    """Reads one request line byte-wise up to the newline (nothing after it is consumed)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = conn.recv(4096, socket.MSG_PEEK)
        if not chunk:
            break
        nl = chunk.find(b"\n")
        take = len(chunk) if nl < 0 else nl + 1
        buf += conn.recv(take)
        if len(buf) > p.MAX_MESSAGE:
            raise p.ProtocolError("request too long")
    return bytes(buf)


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


def _state_dict(state: p.ProcessState) -> dict[str, Any]:
    return {"id": state.id, "exec_id": state.exec_id, "status": str(state.status),
            "pid": state.pid, "tty": state.tty, "exit_code": state.exit_code,
            "exited_at": state.exited_at}


def _event_dict(event: p.Event) -> dict[str, Any]:
    return {"type": str(event.type), "time": event.time, "exec_id": event.exec_id,
            "exit_code": event.exit_code}

