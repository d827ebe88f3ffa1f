"""The one place where the shim spawns and reaps child processes.

The shim is a child subreaper: the container's init (and every exec'd process) is reparented to
it when ``runtime create`` / ``runtime exec --detach`` exits, so it must reap with
``waitpid(-1)``. A central reaper like that would steal the status of a runtime subprocess that
someone else waits for (``Popen.wait`` would then see ECHILD and silently report 0). So:

- every child is started by :meth:`Children.spawn`, which registers its pid under the same lock
  the reaper takes to dispatch a status, so no status can arrive for an unregistered child;
- only the reaper thread calls ``waitpid``; :meth:`Children.wait` waits for its dispatch, and the
  ``Popen`` gets its ``returncode`` set so it never waits itself;
- a reparented process (known only by the pid file the runtime wrote) is claimed with
  :meth:`Children.watch`; if it died before it was claimed, its status is kept (for a while,
  only if reaped after ``since``, against pid reuse) and handed over at once.

Exit codes follow the shell and Docker: the code, or 128 + the signal number.
This module must never wait for a child anywhere but in :meth:`Children._reap_loop`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time

from pydeskd.shim import diag

TYPE_CHECKING = False  # typing and dataclasses cost start-up time: mypy only (see serve.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

_UNCLAIMED_TTL = 120.0  # seconds a status of an unknown pid is kept for a late watch()


def exit_code(status: int) -> int:
    """A waitpid status as a shell exit code: the code, or 128 + signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Spawned:
    """A child the shim started itself before :class:`Children` existed (``os.posix_spawn``
    of ``runtime create``, first thing at start-up, see :mod:`pydeskd.shim.serve`), handed over
    with :meth:`Children.adopt`. Popen's part that Children uses: pid, args, returncode, kill."""

    def __init__(self, pid: int, args: Sequence[str]) -> None:
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None  # set by the reaper

    def kill(self) -> None:
        if self.returncode is None:  # as Popen: never signal a reaped (maybe reused) pid
            os.kill(self.pid, 9)


if TYPE_CHECKING:
    Child: TypeAlias = subprocess.Popen[bytes] | Spawned  # what spawn() or adopt() returned


class Children:
    """Spawns children and reaps every child (the shim's only waitpid caller)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._spawned = 0  # bumped per spawn: wakes a reaper that saw no children
        self._popens: dict[int, Child] = {}
        self._codes: dict[int, int] = {}  # spawned pids that exited, until wait() takes them
        self._watches: dict[int, Callable[[int], None]] = {}
        self._unclaimed: dict[int, tuple[int, float]] = {}  # pid -> (code, monotonic reaped)
        self._thread = threading.Thread(target=self._reap_loop, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def spawn(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Starts a child (``subprocess.Popen`` arguments); never call ``wait`` on the result."""
        diag.debug("spawn %s", " ".join(argv))
        with self._lock:
            proc: subprocess.Popen[bytes] = subprocess.Popen(list(argv), **popen)
            self._popens[proc.pid] = proc
            self._spawned += 1
            self._changed.notify_all()
        return proc

    def adopt(self, pid: int, args: Sequence[str]) -> Spawned:
        """Takes charge of a child started before this object; call before :meth:`start`
        (the reaper would otherwise keep its status as an unclaimed orphan's)."""
        child = Spawned(pid, args)
        with self._lock:
            if self._thread.is_alive():
                raise RuntimeError("adopt() after start(): the child may be reaped already")
            self._popens[pid] = child
            self._spawned += 1
        return child

    def wait(self, proc: Child, timeout: float | None = None) -> int:
        """The exit code of a spawned child. Raises TimeoutError (the child is left running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while proc.pid not in self._codes:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{proc.args!r} did not exit in {timeout} s")
                self._changed.wait(left)
            return self._codes.pop(proc.pid)

    def finish(self, proc: Child, timeout: float) -> int:
        """The exit code of a spawned child; one that overstays ``timeout`` is killed (and
        reaped) and TimeoutError raised: a hung runtime must not outlive the shim's patience."""
        try:
            return self.wait(proc, timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                self.wait(proc, 10.0)
            raise

    def run(self, argv: Sequence[str], timeout: float = 60.0,
            **popen: Any) -> tuple[int, bytes]:
        """Runs a child to completion: (exit code, its stdout+stderr). Raises TimeoutError
        (the child killed) if it takes longer than ``timeout``."""
        proc = self.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, **popen)
        stdout = proc.stdout
        assert stdout is not None
        chunks: list[bytes] = []

        def read() -> None:  # in a thread, so that a hung child is still timed out
            with stdout:
                chunks.append(stdout.read())

        reader = threading.Thread(target=read, name="run-output", daemon=True)
        reader.start()
        code = self.finish(proc, timeout)
        reader.join(5.0)  # a grandchild may hold the pipe open: not waited for longer
        return code, b"".join(chunks)

    def watch(self, pid: int, on_exit: Callable[[int], None], since: float) -> None:
        """Calls ``on_exit(code)`` (in a new thread) when reparented ``pid`` dies.

        ``since`` is the monotonic time the process was created before: an already-reaped
        status older than that belongs to an earlier process with the same pid.
        """
        with self._lock:
            early = self._unclaimed.pop(pid, None)
            if early is None or early[1] < since:
                self._watches[pid] = on_exit
                return
        _call(on_exit, pid, early[0])

    def _reap_loop(self) -> None:
        while True:
            with self._lock:
                generation = self._spawned
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                # No children: sleep until spawn() makes one (orphans only come through them).
                with self._lock:
                    while self._spawned == generation:
                        self._changed.wait()
                continue
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
                continue
            self._dispatch(pid, exit_code(status))

    def _dispatch(self, pid: int, code: int) -> None:
        callback = None
        with self._lock:
            proc = self._popens.pop(pid, None)
            if proc is not None:
                proc.returncode = code  # so Popen never calls waitpid itself
                self._codes[pid] = code
                self._changed.notify_all()
            else:
                callback = self._watches.pop(pid, None)
                if callback is None:
                    now = time.monotonic()
                    self._unclaimed = {p: v for p, v in self._unclaimed.items()
                                       if now - v[1] < _UNCLAIMED_TTL}
                    self._unclaimed[pid] = (code, now)
        if callback is not None:
            _call(callback, pid, code)


def _call(callback: Callable[[int], None], pid: int, code: int) -> None:
    # Exit handlers drain output and write files: in their own thread, never in the reaper's,
    # which must keep reaping (a runtime subprocess may be waited for meanwhile).
    def run() -> None:
        try:
            callback(code)
        except Exception:
            diag.exception("exit handler of pid %d failed", pid)

    threading.Thread(target=run, name=f"exit-{pid}", daemon=True).start()
