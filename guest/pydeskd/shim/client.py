"""The Python client of a shim's control socket (used by the daemon and the tests).

:func:`start_shim` spawns the shim and returns a :class:`ShimClient`; a restarted
daemon finds a running shim again with :meth:`ShimClient.for_state_dir`. Each call opens its own
connection, so calls may run in parallel threads (several ``wait`` at once, say).
Errors: :class:`~pydeskd.shim.protocol.ShimError` (with an ErrorKind) for a refused request,
``OSError`` when the shim cannot be reached, :class:`ShimStartError` when it cannot start.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydeskd.shim import protocol as p
from pydeskd.shim import starting
from pydeskd.shim.paths import socket_path
from pydeskd.shim.starting import ShimStartError

__all__ = ["AttachStream", "ShimClient", "ShimStartError", "shim_command", "start_shim"]


def shim_command() -> list[str]:
    """The shim executable next to the running interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "pydesk-shim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pydeskd.shim.main"]


def start_shim(cid: str, bundle: Path, state_dir: Path, *, runtime: Path | None = None,
               runtime_root: Path | None = None, stdin: bool = False,
               log_path: Path | None = None, log_max_size: int = 0, log_max_files: int = 1,
               debug: bool = False, timeout: float = 120.0) -> ShimClient:
    """Creates the container under a new detached shim (spawned from this process, see
    :mod:`pydeskd.shim.starting`). Raises ShimStartError with the runtime's message."""
    path = starting.start(cid, bundle, state_dir, runtime=runtime, runtime_root=runtime_root,
                          stdin=stdin, log_path=log_path, log_max_size=log_max_size,
                          log_max_files=log_max_files, debug=debug, timeout=timeout)
    return ShimClient(path)


class ShimClient:
    def __init__(self, path: Path, timeout: float | None = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    @classmethod
    def for_state_dir(cls, state_dir: Path, timeout: float | None = 60.0) -> ShimClient:
        return cls(socket_path(state_dir), timeout)

    def alive(self) -> bool:
        try:
            self.state()
        except OSError:
            return False
        return True

    def state(self, exec_id: str | None = None) -> p.ProcessState:
        return p.ProcessState.from_dict(self._call(p.StateRequest(exec_id)))

    def start(self, exec_id: str | None = None) -> p.ProcessState:
        return p.ProcessState.from_dict(self._call(p.StartRequest(exec_id)))

    def wait(self, exec_id: str | None = None, timeout: float | None = None) -> p.ProcessState:
        """Blocks until the process has exited; raises TimeoutError after ``timeout``."""
        return p.ProcessState.from_dict(self._call(p.WaitRequest(exec_id), timeout))

    def kill(self, signal: int = 15, exec_id: str | None = None, all: bool = False) -> None:
        self._call(p.KillRequest(exec_id, signal=signal, all=all))

    def resize(self, width: int, height: int, exec_id: str | None = None) -> None:
        self._call(p.ResizeRequest(exec_id, width=width, height=height))

    def exec(self, exec_id: str, process: dict[str, Any], tty: bool = False,
             stdin: bool = False) -> p.ProcessState:
        """Adds an exec (status created): attach to it if wanted, then ``start(exec_id)``.

        ``process`` is a complete OCI process object (args, env, cwd, user, capabilities...,
        as in config.json); ``terminal`` is set from ``tty``.
        """
        return p.ProcessState.from_dict(
            self._call(p.ExecRequest(exec_id, process=process, tty=tty, stdin=stdin)))

    def delete(self, exec_id: str | None = None) -> p.ProcessState:
        """For the init: the container is deleted, the state dir removed, the shim exits."""
        return p.ProcessState.from_dict(self._call(p.DeleteRequest(exec_id)))

    def events(self) -> list[p.Event]:
        result = self._call(p.EventsRequest())
        return [p.Event.from_dict(e) for e in result.get("events", [])]

    def attach(self, exec_id: str | None = None, stdin: bool = False) -> AttachStream:
        sock = self._connect(self.timeout)
        try:
            sock.sendall(p.encode_request(p.AttachRequest(exec_id, stdin=stdin)))
            line, rest = _read_line(sock)
            result = p.decode_reply(line)
        except BaseException:
            sock.close()
            raise
        return AttachStream(sock, bool(result.get("tty")), rest)

    def _connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.path))
        except BaseException:
            sock.close()
            raise
        return sock

    def _call(self, request: p.Request, timeout: float | None = -1.0) -> dict[str, Any]:
        with self._connect(self.timeout if timeout == -1.0 else timeout) as sock:
            sock.sendall(p.encode_request(request))
            line, _ = _read_line(sock)
        return p.decode_reply(line)


class AttachStream:
    """An attached connection: output from the process, input to its stdin.

    Without a tty the output is demultiplexed into (Stream, bytes); with one it is raw and
    reported as stdout.
    """

    def __init__(self, sock: socket.socket, tty: bool, initial: bytes = b"") -> None:
        self.sock = sock
        self.tty = tty
        self._decoder = p.FrameDecoder()
        self._initial = initial

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_stdin(self) -> None:
        """Half-closes the connection: the process's stdin is closed (stdin-once)."""
        self.sock.shutdown(socket.SHUT_WR)

    def chunks(self) -> Iterator[tuple[p.Stream, bytes]]:
        """Output until the process's output ends (or the socket times out: TimeoutError)."""
        data, self._initial = self._initial, b""
        while True:
            if data:
                if self.tty:
                    yield p.Stream.STDOUT, data
                else:
                    yield from self._decoder.feed(data)
            data = self.sock.recv(65536)
            if not data:
                if self._decoder.pending:
                    raise p.ProtocolError("attach stream ended inside a frame")
                return

    def read_all(self) -> tuple[bytes, bytes]:
        """(stdout, stderr) until the output ends."""
        out = {p.Stream.STDOUT: bytearray(), p.Stream.STDERR: bytearray()}
        for stream, data in self.chunks():
            out.setdefault(stream, bytearray()).extend(data)
        return bytes(out[p.Stream.STDOUT]), bytes(out[p.Stream.STDERR])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AttachStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_line(sock: socket.socket) -> tuple[bytes, bytes]:
    """One reply line, and whatever came after it (the start of an attach stream)."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise p.ProtocolError("the shim closed the connection without a reply")
        buf += chunk
        if len(buf) > p.MAX_MESSAGE:
            raise p.ProtocolError("reply too long")
    nl = buf.index(b"\n")
    return bytes(buf[:nl + 1]), bytes(buf[nl + 1:])
