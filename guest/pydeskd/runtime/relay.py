"""``run`` of a terminal container without ``--console-socket``: we hold the pty ourselves.

As runc does in that case, ``run`` listens on a private console socket, receives the pty master
from the container's init, and relays our stdin to it and its output to our stdout until the
container exits; our own terminal (if stdin is one) is put in raw mode and restored, and its
size follows SIGWINCH. Only the foreground ``run`` uses this; it never outlives the container.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import termios
import tty
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def console_listener(directory: str) -> Iterator[tuple[str, socket.socket]]:
    """A unix socket in ``directory`` for the init's master; removed on exit."""
    path = os.path.join(directory, f"console-{os.getpid()}.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(1)
        yield path, server
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def receive_master(server: socket.socket, timeout: float = 10.0) -> int:
    server.settimeout(timeout)
    conn, _ = server.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    if len(fds) != 1:
        raise OSError("the container's init sent no pty master")
    return fds[0]


def _copy_size(source: int, target: int) -> None:
    with contextlib.suppress(OSError):
        target_size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, termios.TIOCSWINSZ, target_size)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: every slave fd is closed
        return b""


def _drain(master: int) -> None:
    while select.select([master], [], [], 0)[0]:
        data = _read(master)
        if not data:
            return
        os.write(1, data)


def relay(master: int, exited: Callable[[], int | None]) -> int:
    """Copies stdin -> master and master -> stdout until ``exited()`` returns a status."""
    stdin_tty = os.isatty(0)
    saved = termios.tcgetattr(0) if stdin_tty else None
    if stdin_tty:
        _copy_size(0, master)
        signal.signal(signal.SIGWINCH, lambda *_: _copy_size(0, master))
        tty.setraw(0)
    reading = [master, 0]
    try:
        while True:
            status = exited()
            if status is not None:
                _drain(master)
                return status
            ready, _, _ = select.select(reading, [], [], 0.05)
            if master in ready:
                data = _read(master)
                if data:
                    os.write(1, data)
                else:
                    reading.remove(master)
            if 0 in ready:
                data = _read(0)
                if data:
                    os.write(master, data)
                else:
                    reading.remove(0)
                    # The end of our input: an EOF character, as a terminal would send.
                    with contextlib.suppress(OSError):
                        os.write(master, b"\x04")
    finally:
        os.close(master)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
