"""Stdin pipelined with a hijacked request: the bytes already read with the request head come
first, and the rest is read from the socket only as the handler asks (a client that streams
stdin into a handler that does not read is held back, not buffered without limit).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.api.hijack import HijackRequest, HijackRoute
from pydeskd.api.server import HttpFront
from tests.unit.api.front_helpers import serve_in_thread, stop_served

STREAM = 64 << 20  # what the client tries to push while the handler does not read
HELD_BACK = 8 << 20  # far above the socket buffers and the reader's limit, far below STREAM


class Front:
    def __init__(self, base: Path) -> None:
        self.socket = base / "d.sock"
        self.first = threading.Event()
        self.release = threading.Event()
        self.front = HttpFront(None, [HijackRoute("POST", "/containers/{id}/attach",
                                                  self.handler)])
        self.loop, self.thread = serve_in_thread(self.front, self.socket)

    async def handler(self, request: HijackRequest) -> None:
        reader, writer = await request.upgrade()
        head = await reader.readexactly(5)
        self.first.set()
        while not self.release.is_set():
            await asyncio.sleep(0.05)
        total = 0
        while data := await reader.read(65536):
            total += len(data)
        writer.write(head + b" %d\n" % total)
        await writer.drain()

    def close(self) -> None:
        self.release.set()
        stop_served(self.front, self.loop, self.thread)


@pytest.fixture
def front() -> Iterator[Front]:
    base = Path(tempfile.mkdtemp(prefix="pdhs-", dir="/tmp"))
    f = Front(base)
    yield f
    f.close()
    shutil.rmtree(base, ignore_errors=True)


def test_pipelined_stdin_is_read_only_as_the_handler_asks(front: Front) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(front.socket))
        # The head and the first stdin bytes in one write: h11 reads both at once.
        sock.sendall(b"POST /v1.47/containers/x/attach?stdin=1 HTTP/1.1\r\nHost: d\r\n"
                     b"Content-Length: 0\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                     b"hello")
        sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        assert front.first.wait(5)
        sent = 0
        chunk = b"x" * (1 << 20)
        sock.settimeout(1)
        while sent < STREAM:
            try:
                sent += sock.send(chunk)
            except TimeoutError:
                break  # held back: the daemon is not taking more
        assert sent < HELD_BACK
        front.release.set()
        sock.settimeout(10)
        sock.sendall(b"y" * (1 << 20))
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while data := sock.recv(4096):
            reply += data
        assert reply == b"hello %d\n" % (sent + (1 << 20))
