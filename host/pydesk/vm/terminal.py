"""``pydesk vm ssh``'s terminal side: a command's output streamed, or an interactive pty session.

What it is for: runs a command (or a login shell) in the guest over a :class:`GuestChannel`
session, copies stdin/stdout/stderr between the user's terminal and the channel, and returns the
remote exit status. On a terminal the local tty is put in raw mode (POSIX) and the remote pty
follows the window size.
What it must never do: leave the user's terminal in raw mode (restored in ``finally``).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, BinaryIO

from pydesk.vm.channel import GuestChannel


def _window_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.columns, size.lines
    except OSError:
        return 80, 24


def run_command(channel: GuestChannel, command: str, stdout: BinaryIO, stderr: BinaryIO) -> int:
    """Runs ``command`` without a pty, streaming its output; returns its exit status."""
    chan: Any = channel.transport.open_session(timeout=30)
    chan.exec_command(command)
    chan.shutdown_write()
    while True:
        if chan.recv_ready():
            stdout.write(chan.recv(65536))
            stdout.flush()
        elif chan.recv_stderr_ready():
            stderr.write(chan.recv_stderr(65536))
            stderr.flush()
        elif chan.exit_status_ready():
            while chan.recv_ready():
                stdout.write(chan.recv(65536))
            while chan.recv_stderr_ready():
                stderr.write(chan.recv_stderr(65536))
            stdout.flush()
            stderr.flush()
            return int(chan.recv_exit_status())
        else:
            chan.status_event.wait(0.05)


def interactive(channel: GuestChannel, command: str | None = None) -> int:
    """A pty session (a login shell, or ``command``) bound to this terminal; its exit status."""
    chan: Any = channel.transport.open_session(timeout=30)
    columns, lines = _window_size()
    chan.get_pty(term=os.environ.get("TERM", "xterm"), width=columns, height=lines)
    if command:
        chan.exec_command(command)
    else:
        chan.invoke_shell()
    if sys.platform == "win32" or not sys.stdin.isatty():
        return _pump_threads(chan)
    return _pump_posix(chan)


def _pump_posix(chan: Any) -> int:
    import select
    import signal
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def resize(*_: object) -> None:
        chan.resize_pty(*_window_size())

    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        tty.setraw(fd)
        out = sys.stdout.buffer
        while True:
            readable, _, _ = select.select([chan, fd], [], [], 0.5)
            if chan in readable:
                data = chan.recv(65536)
                if not data:
                    break
                out.write(data)
                out.flush()
            if fd in readable:
                data = os.read(fd, 4096)
                if not data:
                    chan.shutdown_write()
                else:
                    chan.sendall(data)
            if chan.exit_status_ready() and not chan.recv_ready():
                break
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
    return int(chan.recv_exit_status())


def _pump_threads(chan: Any) -> int:
    def send_input() -> None:
        while data := os.read(sys.stdin.fileno(), 4096):
            chan.sendall(data)
        chan.shutdown_write()

    threading.Thread(target=send_input, daemon=True).start()
    out = sys.stdout.buffer
    while data := chan.recv(65536):
        out.write(data)
        out.flush()
    return int(chan.recv_exit_status())
