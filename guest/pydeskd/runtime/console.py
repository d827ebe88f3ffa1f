"""The container's terminal: a pty made inside the container, its master sent to the caller.

As runc does: the pty is opened from the container's own ``/dev/ptmx`` (its devpts instance),
the master goes to ``--console-socket`` over SCM_RIGHTS (the message data is the master's
name), and the slave becomes the process's stdin/stdout/stderr and controlling terminal.
Must never keep the master open in the container after sending it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431


def open_pty() -> tuple[int, str]:
    """(master fd, slave path) of a new pty from /dev/ptmx of the current mount namespace."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
        raw = fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0))  # ptsname
    except OSError:
        os.close(master)
        raise
    return master, f"/dev/pts/{struct.unpack('I', raw)[0]}"


def set_size(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def connect(path: str) -> int:
    """A connected fd to the caller's console socket (made before entering the container)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock.detach()


def send_master(socket_fd: int, master: int) -> None:
    import socket

    sock = socket.socket(fileno=socket_fd)
    try:
        socket.send_fds(sock, [b"/dev/ptmx"], [master])
    finally:
        sock.detach()  # the caller owns (and closes) socket_fd


def attach_slave(slave_path: str) -> None:
    """Makes the slave our stdio and controlling terminal (we lead a new session already)."""
    slave = os.open(slave_path, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def send_new_pty(socket_fd: int, height: int | None, width: int | None) -> str:
    """Opens a pty, sizes it and sends the master away; returns the slave's path (the caller
    binds it on /dev/console, then calls :func:`attach_slave`)."""
    master, slave_path = open_pty()
    try:
        if height is not None and width is not None:
            set_size(master, height, width)
        send_master(socket_fd, master)
    finally:
        os.close(master)
    return slave_path
