"""The upstream seam: a byte stream to the guest daemon, one per client connection.

What it is for: the proxy never knows how the guest is reached. In the VM an opener returns
``GuestChannel.open_unix()`` (a paramiko Channel, which already has this shape); in tests and in
any native setup :func:`unix_opener` connects to a daemon's unix socket.

What it must never do: buffer, retry or interpret bytes; it is a pipe.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Protocol


class Stream(Protocol):
    """A full-duplex byte stream with half-close (paramiko Channel, or :class:`SocketStream`)."""

    def recv(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of stream. Blocks."""
        ...

    def sendall(self, data: bytes, /) -> None: ...

    def shutdown_write(self) -> None:
        """End of our data (the peer reads EOF) while its data still comes."""
        ...

    def close(self) -> None:
        """Release it; wakes a ``recv`` blocked in another thread."""
        ...


Opener = Callable[[], Stream]
"""Opens a new stream to the guest daemon; raises (any exception) when it cannot."""


class SocketStream:
    """A connected socket as a :class:`Stream`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, size: int, /) -> bytes:
        return self.sock.recv(size)

    def sendall(self, data: bytes, /) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        # shutdown first: close() alone does not wake a recv blocked in another thread.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()


def unix_opener(path: str, timeout: float = 10.0) -> Opener:
    """An opener connecting to the unix socket ``path`` (a native pydeskd)."""

    def open_stream() -> Stream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return SocketStream(sock)

    return open_stream
