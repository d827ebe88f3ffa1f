"""The shim's record of one process (the container's init, or an exec) and its stdio.

A process's :class:`~pydeskd.shim.protocol.Status` only moves forward; every change happens
under the owner's lock (the server's). The stdin fd is a pipe's write end, or the pty master.
This module must never run the runtime (the server does) nor block on a client.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
import threading
from dataclasses import dataclass, field

from pydeskd.shim.protocol import ErrorKind, ProcessState, ShimError, Status
from pydeskd.shim.stdio import Fanout, OutputPump


@dataclass
class Process:
    """Mutable by design (it is the live record); guarded by the server's lock."""

    n: int                       # 0 = init; numbers name the exec's files in the state dir
    cid: str
    exec_id: str | None
    tty: bool
    fanout: Fanout
    pump: OutputPump
    status: Status = Status.CREATED
    pid: int = 0
    reaped: bool = False         # its pid was reaped (and may be reused): never signal it
    exit_code: int | None = None
    exited_at: str | None = None
    stdin_fd: int | None = None
    master_fd: int | None = None
    # Ends handed to the runtime as its stdin/stdout/stderr (one fd may serve several, e.g.
    # /dev/null); the shim closes its copies once the runtime is spawned.
    child_fds: dict[str, int] = field(default_factory=dict)
    exited: threading.Event = field(default_factory=threading.Event)
    # fd_lock guards the fds' lifetime and is held only briefly (a close never waits for a
    # write); write_lock keeps concurrent stdin writers in order and may be held while the
    # process does not read.
    fd_lock: threading.Lock = field(default_factory=threading.Lock)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    # Held while it is being started: its exit is recorded only after its start (event order).
    start_lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self) -> ProcessState:
        return ProcessState(id=self.cid, exec_id=self.exec_id, status=self.status, pid=self.pid,
                            tty=self.tty, exit_code=self.exit_code, exited_at=self.exited_at)

    def write_stdin(self, data: bytes) -> bool:
        """Writes to the process's stdin; False once it is closed or the reader is gone."""
        with self.write_lock:
            with self.fd_lock:
                fd = self.master_fd if self.tty else self.stdin_fd
                if fd is None:
                    return False
                # A private copy: a concurrent close cannot free (and reuse) it mid-write.
                fd = os.dup(fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                return False
            finally:
                os.close(fd)
            return True

    def close_stdin(self) -> None:
        """Closes the stdin pipe (EOF for the process). With a tty there is no separate stdin."""
        with self.fd_lock:
            if self.stdin_fd is not None and not self.tty:
                os.close(self.stdin_fd)
                self.stdin_fd = None

    def resize(self, width: int, height: int) -> None:
        with self.fd_lock:
            if not self.tty or self.master_fd is None:
                raise ShimError(ErrorKind.CONFLICT, "the process has no terminal to resize")
            fcntl.ioctl(self.master_fd, termios.TIOCSWINSZ,
                        struct.pack("HHHH", height, width, 0, 0))

    def close_child_fds(self) -> None:
        for fd in set(self.child_fds.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.child_fds = {}

    def close_fds(self) -> None:
        """After exit and drain: releases every fd the shim still holds for this process."""
        with self.fd_lock:
            for fd in (self.stdin_fd, self.master_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self.stdin_fd = self.master_fd = None
            self.close_child_fds()
