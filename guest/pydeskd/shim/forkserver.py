"""pydesk-runc without a new interpreter: a fork server the shim starts with itself.

What it is for: every ``docker exec`` runs ``pydesk-runc exec``; a new interpreter for it costs
~10 ms to start and ~7 ms of imports, more than the rest of the exec together. So when the
runtime is pydesk-runc, the shim forks one helper at its very start, before any thread exists
(forking a threaded process is unsafe): the server. It imports pydesk-runc's CLI once, then
for each request forks a child that is exactly what the console script would have been: stdio
dup'ed from the fds the shim passed, the bundle as cwd, default signal dispositions, and
``pydeskd.runtime.cli.main(argv)`` with the same argv. The server reports the child's pid and,
once it has reaped it, its exit code. Processes that ``exec --detach`` leaves behind are
reparented to the shim (a subreaper; the server is not one), which reaps and watches them as
before.

What it must never do: hold any fd of the shim's beyond its own socket (a container's stdin
pipe kept open would never see EOF), outlive the shim (it exits at EOF on its socket, and on
the shim's death through PDEATHSIG), or run anything but pydesk-runc's main in its children.
If it is gone, the shim spawns the runtime as any other (:meth:`ForkClient.run` raises
:class:`ForkServerGone` and the caller falls back).

Messages are marshal'd dicts on a SOCK_SEQPACKET pair (one message per datagram); a request
carries its three stdio fds as SCM_RIGHTS.
"""

from __future__ import annotations

import marshal
import os
import socket
import threading

TYPE_CHECKING = False  # typing costs start-up time (see serve.py): mypy only
if TYPE_CHECKING:
    from typing import Any, NoReturn

_MAX_MESSAGE = 1 << 16
PR_SET_PDEATHSIG = 1
SIGKILL = 9


class ForkServerGone(Exception):
    """The server died or never started: run the runtime as a new process instead."""


def start() -> ForkClient | None:
    """Forks the server; call before the shim has any thread. None if it cannot be started."""
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return None
    shim = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:  # pragma: no cover - the server's process (tested through the client)
        try:
            ours.close()
            _serve(theirs, shim)
        finally:
            os._exit(1)
    theirs.close()
    return ForkClient(ours, pid)


class ForkClient:
    """The shim's end: thread-safe; each :meth:`run` waits for its own child only."""

    def __init__(self, sock: socket.socket, server_pid: int) -> None:
        self.server_pid = server_pid
        self._sock = sock
        self._lock = threading.Lock()  # one sender at a time, one reader at a time
        self._read_lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._next = 0
        self._gone = False

    def submit(self, argv: list[str], cwd: str, stdio: tuple[int, int, int]) -> int:
        """Asks for pydesk-runc ``argv`` (its argv[1:]) with ``stdio`` as fds 0-2, in ``cwd``;
        the fds are passed (the caller may close its copies at once). Returns the request's id
        for :meth:`wait`. Raises ForkServerGone: nothing was started then."""
        with self._lock:
            if self._gone:
                raise ForkServerGone("the fork server is gone")
            self._next += 1
            rid = self._next
            request = marshal.dumps({"id": rid, "argv": argv, "cwd": cwd})
            try:
                self._sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                bytes(memoryview(_fds(stdio))))])
            except OSError as e:
                self._gone = True
                raise ForkServerGone(f"the fork server is gone: {e}") from None
        return rid

    def wait(self, rid: int, timeout: float) -> int:
        """The exit code of request ``rid``'s runtime. One past ``timeout`` is killed and
        TimeoutError raised; ForkServerGone if the server died before reporting (the runtime
        may have run: the caller cannot retry it blindly)."""
        started = self._reply(rid, "pid", timeout)
        if started is None:
            raise ForkServerGone("the fork server did not report the runtime's start")
        try:
            done = self._reply(rid, "code", timeout)
        except TimeoutError:
            # Not reaped yet (the server reports the code after it reaps): the pid is still
            # its child's, not a reused one.
            os.kill(started["pid"], SIGKILL)
            self._reply(rid, "code", 10.0)
            raise
        if done is None:
            raise ForkServerGone("the fork server died while the runtime ran")
        return int(done["code"])

    def _reply(self, rid: int, kind: str, timeout: float) -> dict[str, Any] | None:
        """The reply of ``kind`` for ``rid``; None when the server is gone first. Whoever
        holds the read lock reads for everyone and hands replies out."""
        import time

        deadline = time.monotonic() + timeout
        key = rid * 2 + (kind == "code")
        while True:
            with self._changed:
                if key in self._replies:
                    return self._replies.pop(key)
                if self._gone:
                    return None
            if time.monotonic() >= deadline:
                raise TimeoutError(f"pydesk-runc did not {'exit' if kind == 'code' else 'start'}"
                                   f" in {timeout} s")
            if not self._read_lock.acquire(timeout=0.05):
                with self._changed:
                    self._changed.wait(0.05)
                continue
            try:
                self._sock.settimeout(max(0.0, min(0.2, deadline - time.monotonic())))
                try:
                    data = self._sock.recv(_MAX_MESSAGE)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""
                with self._changed:
                    if not data:
                        self._gone = True
                    else:
                        msg = marshal.loads(data)
                        self._replies[msg["id"] * 2 + ("code" in msg)] = msg
                    self._changed.notify_all()
            finally:
                self._read_lock.release()

    def close(self) -> None:
        """The server exits at EOF; its exit is reaped by the shim's reaper."""
        with self._lock:
            self._gone = True
            self._sock.close()


def _fds(stdio: tuple[int, int, int]) -> Any:
    import array

    return array.array("i", stdio)


# --- the server's process ----------------------------------------------------------------------


def _serve(sock: socket.socket, shim: int) -> NoReturn:
    import select
    import signal

    _close_all_but(sock.fileno())
    _set_pdeathsig(shim)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the shim's session is not ours to die with
    children: dict[int, int] = {}  # pid -> request id
    sock_fd = sock.fileno()
    imported = False
    while True:
        try:
            ready, _, _ = select.select([sock_fd, wake_r], [], [], None if imported else 0.5)
        except InterruptedError:
            continue
        if not ready and not imported:
            # Idle just after the shim started: import the runtime now, not on the first
            # exec, and not while the container is being created (two cores).
            from pydeskd.runtime import cli, exec

            imported = True
        if sock_fd in ready:
            request = _receive(sock)
            if request is None:
                os._exit(0)  # the shim is gone or done
            if not imported:  # once, here: the children that follow inherit it
                from pydeskd.runtime import cli, exec  # noqa: F401

                imported = True
            argv, cwd, stdio, rid = request
            pid = os.fork()
            if pid == 0:
                _child((sock_fd, wake_r, wake_w), argv, cwd, stdio)
            for fd in stdio:
                os.close(fd)
            children[pid] = rid
            _send(sock, {"id": rid, "pid": pid})
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            rid = children.pop(pid, 0)
            if rid:
                _send(sock, {"id": rid, "code": os.waitstatus_to_exitcode(status)})


def _receive(sock: socket.socket) -> tuple[list[str], str, list[int], int] | None:
    import array

    fds = array.array("i")
    try:
        data, ancdata, _, _ = sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(3 * fds.itemsize))
    except OSError:
        return None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    msg = marshal.loads(data)
    return msg["argv"], msg["cwd"], list(fds), msg["id"]


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    try:
        sock.send(marshal.dumps(msg))
    except OSError:
        os._exit(0)  # the shim is gone: its children were reparented; nothing to report to


def _child(ours: tuple[int, ...], argv: list[str], cwd: str, stdio: list[int]) -> NoReturn:
    """What the console script would be: fds 0-2, cwd, default signals, then main(argv)."""
    code = 1
    try:
        import signal

        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        for fd in ours:  # the server's socket and wakeup pipe
            os.close(fd)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        for fd in set(stdio):
            if fd > 2:
                os.close(fd)
        os.chdir(cwd)
        import sys

        # Streams of their own on the new fds 0-2, as a new process has (the server's may be
        # anything its parent set, e.g. a test runner's capture).
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")  # noqa: SIM115
        from pydeskd.runtime import cli

        code = cli.main(argv)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # a bug: said on the runtime's stderr, which the shim reports
        code = 1
        try:
            import traceback

            traceback.print_exc()
            import sys

            sys.stderr.flush()
        except BaseException:  # nothing left to tell it with
            pass
    finally:
        os._exit(code)


def _close_all_but(keep: int) -> None:
    """Fds 0-2 stay (the shim's /dev/null and shim.log); every other one but ``keep`` goes."""
    os.closerange(3, keep)
    os.closerange(keep + 1, _max_fd())


def _max_fd() -> int:
    try:
        return max(int(name) for name in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        return 65536


def _set_pdeathsig(shim: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if os.getppid() != shim:  # the shim died before the flag was set
        os._exit(0)
