"""One HTTP/1.1 connection as h11 sees it, over asyncio streams: the front's shared plumbing.

What it is for: the ASGI bridge and the hijack dispatcher both read events from, and write
responses to, the same keep-alive connection; this wraps the ``h11.Connection`` with the socket
so each of them says ``await next_event()`` and ``await send(event)``.

What it must never do: decide anything about routes or applications.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import h11

READ_SIZE = 64 * 1024
# A request head larger than this is refused (h11 raises RemoteProtocolError; the front answers
# 431). Go's http server allows 1 MB, and X-Registry-Config headers can be large.
MAX_HEAD = 1 << 20


def reason(status: int) -> bytes:
    """The standard reason phrase (Docker's Go server sends one; some clients print it)."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class ClientGone(Exception):
    """The peer closed or reset the connection."""


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.disconnected = False

    async def next_event(self) -> Any:
        """The next h11 event, reading the socket as needed (EOF ends in ConnectionClosed or a
        RemoteProtocolError for a message cut short). Returns h11.PAUSED as h11 does."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.disconnected = True
            self.h11.receive_data(data)

    async def send(self, event: Any) -> None:
        """Send one h11 event and flush; ClientGone when the peer is gone."""
        data = self.h11.send(event)
        if data:
            await self.write(data)

    async def write(self, data: bytes) -> None:
        if self.disconnected and self.writer.is_closing():
            raise ClientGone()
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            self.disconnected = True
            raise ClientGone() from exc

    async def send_simple(self, status: int, body: bytes, *, close: bool = False,
                          content_type: bytes = b"application/json",
                          extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """A whole response with a Content-Length, through h11 (so keep-alive stays right)."""
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        headers += extra or []
        if close:
            headers.append((b"connection", b"close"))
        out = self.h11.send(h11.Response(status_code=status, headers=headers,
                                         reason=reason(status))) or b""
        if body:
            out += self.h11.send(h11.Data(data=body)) or b""
        out += self.h11.send(h11.EndOfMessage()) or b""
        await self.write(out)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
