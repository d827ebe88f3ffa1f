"""A process's output: reader threads that log it and fan it out to attached clients.

The container must never stall because of a client: readers only append to each client's
bounded buffer, and a client whose buffer is full is dropped (its connection shut down).
Output that nobody is attached to is only logged (or, for an exec, discarded, as Docker does).
This module must never block a reader on a socket.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import socket
import threading
import time

from pydeskd.shim import diag
from pydeskd.shim.jsonlog import JsonFileLog
from pydeskd.shim.protocol import Stream, frame

READ_SIZE = 32 * 1024
CLIENT_BUFFER = 4 * 1024 * 1024  # bytes queued for one client before it is dropped


class Subscriber:
    """One attached client: a bounded byte queue drained to its socket by its own thread."""

    def __init__(self, sock: socket.socket, limit: int = CLIENT_BUFFER) -> None:
        self.sock = sock
        self._limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._ended = False
        self.dropped = False
        self.closing = False  # the shim ends the connection (output over, or client dropped)
        self.done = threading.Event()

    def offer(self, data: bytes) -> bool:
        """Queues data; False (and the client is dropped) if its buffer is full."""
        with self._cond:
            if self._ended:
                return True
            if self._queued + len(data) > self._limit:
                self._drop_locked()
                return False
            self._chunks.append(data)
            self._queued += len(data)
            self._cond.notify()
            return True

    def end(self) -> None:
        """No more output: the writer sends what is queued, then finishes."""
        with self._cond:
            self._ended = True
            self._cond.notify()

    def drop(self) -> None:
        with self._cond:
            self._drop_locked()

    def _drop_locked(self) -> None:
        self.dropped = True
        self._ended = True
        self._chunks.clear()
        self._cond.notify()
        self._shutdown()

    def _shutdown(self) -> None:
        # Unblocks a writer stuck in sendall and the attach thread's recv; what was sent
        # stays readable by the client, then it sees EOF.
        self.closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def run_writer(self) -> None:
        """The writer thread's body; sets ``done`` when the output ended or the client left."""
        try:
            while True:
                with self._cond:
                    while not self._chunks and not self._ended:
                        self._cond.wait()
                    if not self._chunks:
                        self._shutdown()
                        return
                    data = self._chunks.popleft()
                    self._queued -= len(data)
                try:
                    self.sock.sendall(data)
                except OSError:
                    self.drop()
                    return
        finally:
            self.done.set()

    def start_writer(self) -> None:
        threading.Thread(target=self.run_writer, name="attach-writer", daemon=True).start()


class Fanout:
    """Publishes a process's output to its subscribers, framed (no tty) or raw (tty)."""

    def __init__(self, framed: bool) -> None:
        self.framed = framed
        self._lock = threading.Lock()
        self._subs: list[Subscriber] = []
        self._ended = False

    def subscribe(self, sub: Subscriber) -> None:
        with self._lock:
            if self._ended:
                sub.end()
            else:
                self._subs.append(sub)

    def publish(self, stream: Stream, data: bytes) -> None:
        payload = frame(stream, data) if self.framed else data
        with self._lock:
            self._subs = [s for s in self._subs if s.offer(payload)]

    def end(self) -> None:
        with self._lock:
            self._ended = True
            subs, self._subs = self._subs, []
        for s in subs:
            s.end()


class OutputPump:
    """Reader threads for a process's output fds; each chunk goes to the log and the fanout."""

    def __init__(self, fanout: Fanout, logfile: JsonFileLog | None) -> None:
        self.fanout = fanout
        self._log = logfile
        self._threads: list[threading.Thread] = []
        self._left = 0
        self._lock = threading.Lock()

    def add(self, fd: int, stream: Stream, close: bool = True) -> None:
        """Reads ``fd`` until EOF (or EIO: a pty whose other side is all closed)."""
        with self._lock:
            self._left += 1
        t = threading.Thread(target=self._read, args=(fd, stream, close),
                             name=f"pump-{stream.name.lower()}", daemon=True)
        self._threads.append(t)
        t.start()

    def _read(self, fd: int, stream: Stream, close: bool) -> None:
        name = "stdout" if stream is Stream.STDOUT else "stderr"
        try:
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except OSError as e:
                    if e.errno != errno.EIO:
                        diag.warning("reading %s: %s", name, e)
                    break
                if not data:
                    break
                if self._log is not None:
                    self._log.write(name, data)
                self.fanout.publish(stream, data)
        finally:
            if self._log is not None:
                self._log.finish(name)
            if close:
                os.close(fd)
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self.fanout.end()

    def wait(self, timeout: float) -> bool:
        """Waits for every reader to reach EOF; False if some did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)
