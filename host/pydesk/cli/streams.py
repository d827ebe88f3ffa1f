"""The hijacked streams of ``run`` and ``exec``: the terminal <-> engine pump, docker's
multiplexed-stream framing, raw mode and resize for ``-t``, and the signal proxy.

The one place that moves bytes between the user's terminal and the engine.
What it must never do: import docker-py at module level, or parse flags.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
from typing import Any


def raw_socket(sock: Any) -> socket.socket:
    """docker-py hands back a SocketIO (unix) or a socket: the socket underneath."""
    return sock._sock if hasattr(sock, "_sock") else sock  # type: ignore[no-any-return]


class Demuxer:
    """Docker's multiplexed stream (8-byte header: stream, 0, 0, 0, size) -> payloads."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        out = []
        while len(self.buffer) >= 8:
            size = int.from_bytes(self.buffer[4:8], "big")
            if len(self.buffer) < 8 + size:
                break
            out.append((self.buffer[0], self.buffer[8:8 + size]))
            self.buffer = self.buffer[8 + size:]
        return out


def pump(sock: socket.socket, tty: bool, stdin_fd: int | None) -> None:
    """Copy the engine's stream to stdout/stderr, and ``stdin_fd`` (if any) to the engine,
    until the engine closes the stream. Stdin's EOF half-closes the socket, as docker does."""
    demux = Demuxer()
    out = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    readers: list[Any] = [sock] + ([stdin_fd] if stdin_fd is not None else [])
    while True:
        ready, _, _ = select.select(readers, [], [])
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            frames = [(1, data)] if tty else demux.feed(data)
            for stream, payload in frames:
                target = out.get(stream, sys.stdout.buffer)
                target.write(payload)
                target.flush()
        if stdin_fd is not None and stdin_fd in ready:
            data = os.read(stdin_fd, 65536)
            if data:
                sock.sendall(data)
            else:
                readers.remove(stdin_fd)
                sock.shutdown(socket.SHUT_WR)


class Terminal:
    """Raw mode on stdin (a tty) for ``-t``, restored on exit; resize on SIGWINCH."""

    def __init__(self, resize: Any) -> None:
        self.resize = resize
        self.saved: Any = None

    def __enter__(self) -> Terminal:
        import signal
        import termios
        import tty

        if os.isatty(0):
            self.saved = termios.tcgetattr(0)
            tty.setraw(0)
        signal.signal(signal.SIGWINCH, lambda *_: self.send_size())
        self.send_size()
        return self

    def send_size(self) -> None:
        try:
            size = os.get_terminal_size(0)
        except OSError:
            return
        with contextlib.suppress(Exception):  # a resize is best effort, as docker's
            self.resize(height=size.lines, width=size.columns)

    def __exit__(self, *exc: object) -> None:
        import termios

        if self.saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)


def proxy_signals(ident: str) -> None:
    """docker's --sig-proxy: SIGINT and SIGTERM to pydesk go to the container (without a tty:
    with one, ^C is a byte the container's terminal turns into its own SIGINT)."""
    import signal

    from pydesk.cli.context import api as new_api

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(Exception):  # the container may be gone already
            new_api().kill(ident, signal=signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)


def attach_and_run(client: Any, ident: str, interactive: bool, tty: bool) -> int:
    """Attach, wait, start, pump, then the container's exit code. docker's order: the attach
    and the wait are in place (the engine sends the wait's headers at once) before the start,
    so neither the first output nor the exit of a short-lived container is missed."""
    import json

    params = {"stdin": int(interactive), "stdout": 1, "stderr": 1, "stream": 1}
    sock = raw_socket(client.attach_socket(ident, params=params))
    waiting = client._post(client._url("/containers/{0}/wait", ident),
                           params={"condition": "next-exit"}, stream=True)
    client._raise_for_status(waiting)
    client.start(ident)
    stdin = 0 if interactive else None
    if tty:
        with Terminal(lambda **kw: client.resize(ident, **kw)):
            pump(sock, True, stdin)
    else:
        proxy_signals(ident)
        pump(sock, False, stdin)
    sock.close()
    result = json.loads(waiting.content or b"{}")
    return int(result.get("StatusCode", 0))
