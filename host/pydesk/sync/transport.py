"""Byte streams to the guest side of a sync session: one seam, two real implementations.

What it is for: a session gets a :data:`TransportFactory` and calls it with the guest argv
(``python3 -m pydeskd.syncd ROOT``); the result is a bidirectional stream to that process's
stdin/stdout. :class:`SshExecTransport` runs it over an SSH exec channel of the VM's
authenticated paramiko connection; :class:`SubprocessTransport` runs it locally (tests, and a
guest-less "sync into a local directory" mode).
What it must never do: interpret the bytes, or open its own SSH connection (it reuses the
agent's, whose host key is pinned).
"""

from __future__ import annotations

import collections
import contextlib
import shlex
import subprocess
import threading
from collections.abc import Callable
from typing import Any, Protocol

import paramiko  # type: ignore[import-untyped]


class Transport(Protocol):
    def send(self, data: bytes) -> None:
        """Writes all of ``data``; raises OSError when the peer is gone."""

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at end of stream."""

    def close(self) -> None:
        """Ends the stream (the guest side exits at EOF); idempotent."""

    def diagnostics(self) -> str:
        """The guest side's stderr tail, for error messages."""


TransportFactory = Callable[[list[str]], Transport]


class SubprocessTransport:
    """The guest side as a local child process (stdin/stdout pipes)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, bufsize=0)
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=50)
        self._thread = threading.Thread(target=self._drain, daemon=True,
                                        name="sync-guest-stderr")
        self._thread.start()
        self._lock = threading.Lock()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:  # closed at EOF (the guest side exited): nothing else reads it
            for line in self.proc.stderr:
                self._stderr.append(line)

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        view = memoryview(data)
        with self._lock:
            while view:  # unbuffered: one write() may take only part of it
                written = self.proc.stdin.write(view)
                view = view[written or 0:]

    def recv(self, size: int) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read1(size) if hasattr(self.proc.stdout, "read1") \
            else self.proc.stdout.read(size)

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._thread.join(timeout=1)

    def diagnostics(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")[-2000:]


class SshExecTransport:
    """The guest side run by an SSH exec request on an authenticated paramiko transport."""

    def __init__(self, transport: paramiko.Transport, argv: list[str],
                 timeout: float = 10.0) -> None:
        self.command = shlex.join(argv)
        try:
            self.chan: Any = transport.open_session(timeout=timeout)
            self.chan.exec_command(self.command)
        except (paramiko.SSHException, OSError) as e:
            raise OSError(f"cannot start {self.command!r} in the guest: {e}") from e
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self._lock:
            try:
                self.chan.sendall(data)
            except (paramiko.SSHException, OSError) as e:
                raise OSError(f"sync channel closed: {e}") from e

    def recv(self, size: int) -> bytes:
        try:
            return bytes(self.chan.recv(size))
        except (paramiko.SSHException, OSError):
            return b""

    def close(self) -> None:
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            self.chan.shutdown_write()
        self.chan.close()

    def diagnostics(self) -> str:
        out = bytearray()
        while self.chan.recv_stderr_ready():
            out += self.chan.recv_stderr(65536)
        return out.decode(errors="replace")[-2000:]


def ssh_factory(get_transport: Callable[[], paramiko.Transport]) -> TransportFactory:
    """A factory for the VM: each session is one exec channel on the transport that
    ``get_transport`` gives at that moment (e.g. ``lambda: holder.get().transport`` with the
    agent's ``ChannelHolder``, so a session started after a reconnect uses the new one)."""
    return lambda argv: SshExecTransport(get_transport(), argv)


def local_factory(python: str, env: dict[str, str] | None = None) -> TransportFactory:
    """A factory running the guest side locally with ``python`` (argv[0] is replaced)."""
    return lambda argv: SubprocessTransport([python, *argv[1:]], env)
