"""The console socket: how the runtime hands the shim a container's pty master (runc's protocol).

The shim listens on a unix socket and passes its path as ``--console-socket``; the runtime
connects and sends the master fd in an SCM_RIGHTS message, then exits. The connection waits in
the listener's backlog, so the shim accepts it after the runtime returned.
This module must never keep the listener or its path beyond one runtime call.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from pydeskd.shim.paths import MAX_SOCKET_PATH

TIMEOUT = 10.0  # how long the runtime has to send the pty master


class ConsoleError(Exception):
    """No pty master came over the console socket."""


def listen(path: Path) -> socket.socket:
    """A listener for the runtime to connect to; pair with :func:`close`."""
    if len(str(path)) > MAX_SOCKET_PATH:
        raise ConsoleError(f"console socket path is too long for AF_UNIX: {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    return sock


def close(listener: socket.socket, path: Path) -> None:
    listener.close()
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def console_socket(path: Path | None) -> Iterator[socket.socket | None]:
    """A listener on ``path`` (None: no terminal, no listener), removed on exit."""
    if path is None:
        yield None
        return
    sock = listen(path)
    try:
        yield sock
    finally:
        close(sock, path)


def receive_master(listener: socket.socket) -> int:
    """The pty master fd the runtime sent (non-inheritable). Raises ConsoleError."""
    listener.settimeout(TIMEOUT)
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        raise ConsoleError("the runtime sent no terminal on the console socket") from None
    fds = array.array("i")
    with conn:
        conn.settimeout(TIMEOUT)
        _msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not fds:
        raise ConsoleError("the console socket carried no file descriptor")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return fds[0]
