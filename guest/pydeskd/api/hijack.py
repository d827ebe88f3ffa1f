"""Hijacked routes: attach and exec start take over the connection as a raw byte stream.

What it is for: Docker's ``POST /containers/{id}/attach`` and ``POST /exec/{id}/start`` reply
``101 UPGRADED`` (or ``200`` with a raw-stream content type when the client asked for no
upgrade) and then carry stdin one way and the container's output the other on the same socket.
ASGI cannot express that, so the HTTP front matches these routes itself and hands the socket to
a handler registered here.

A handler is ``async def handler(request: HijackRequest) -> None``. It validates first (raising
the containerd error kinds, which the front replies as Docker's JSON errors on a connection that
stays usable), then calls ``await request.upgrade()`` to get the raw ``(reader, writer)``. The
front closes the connection when the handler returns. A handler that decides not to stream
(``exec start`` with ``Detach: true``) calls ``await request.reply(status, body)`` instead.

Half-close: when the client shuts down its write side (the docker CLI does, after stdin ends),
``reader`` reaches EOF while ``writer`` still works: close the container's stdin then, and keep
writing output until the process is done.

What it must never do: parse the stream (it is the container's bytes), or write anything before
the response headers are flushed.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydeskd.api.versions import ApiVersion
from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"

# The largest POST body a hijacked route reads before the stream (attach/exec bodies are small).
MAX_HIJACK_BODY = 1 << 20


class Headers:
    """Case-insensitive, read-only view of request headers (last value wins for ``get``)."""

    def __init__(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._items = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        found = default
        for key, value in self._items:
            if key == name:
                found = value
        return found

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


def wants_upgrade(headers: Headers) -> bool:
    """The client asked to switch to a raw stream (``Connection: Upgrade`` + ``Upgrade: tcp``)."""
    connection = {t.strip().lower() for t in (headers.get("connection") or "").split(",")}
    return "upgrade" in connection and bool(headers.get("upgrade"))


# Writes the response head on the socket; the front gives one to each request.
HeadWriter = Callable[[bytes], Awaitable[None]]


@dataclass
class HijackRequest:
    method: str
    path: str  # without the /v1.NN prefix
    params: Mapping[str, str]  # from the route pattern: {"id": ...}
    query: Mapping[str, list[str]]
    headers: Headers
    body: bytes
    api_version: ApiVersion
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    _write_head: HeadWriter
    # Bytes the client sent right after the request, already read by the parser.
    _leftover: bytes = b""
    state: str = field(default="open")  # open -> upgraded | replied

    def query_value(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def query_bool(self, name: str, default: bool = False) -> bool:
        """Docker's boolean query values: ``1``/``true``/``True`` are true, ``0``/``false`` not."""
        value = self.query_value(name)
        if value is None:
            return default
        return value.strip().lower() not in ("", "0", "false", "no")

    def json(self) -> object:
        """The body as JSON (None when empty); InvalidArgument when it is not JSON."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise InvalidArgument(f"invalid JSON body: {exc}") from None

    @property
    def upgrade_requested(self) -> bool:
        return wants_upgrade(self.headers)

    async def upgrade(self, content_type: str = RAW_STREAM,
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Send ``101 UPGRADED`` (``200`` without an Upgrade request), flush it, return the
        socket. Call at most once, and not after ``reply``."""
        if self.state != "open":
            raise FailedPrecondition(f"hijacked request already {self.state}")
        if self.upgrade_requested:
            head = ("HTTP/1.1 101 UPGRADED\r\n"
                    f"Content-Type: {content_type}\r\n"
                    "Connection: Upgrade\r\n"
                    "Upgrade: tcp\r\n\r\n")
        else:
            # No framing: the stream runs until the server closes the connection.
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n"
        await self._write_head(head.encode("latin-1"))
        self.state = "upgraded"
        reader = self._reader
        if self._leftover:
            reader = _PrefixedReader(self._leftover, self._reader)
        return reader, self._writer

    async def reply(self, status: int, body: bytes = b"",
                    content_type: str = "application/json") -> None:
        """A plain HTTP reply instead of a stream (the connection closes after it)."""
        if self.state != "open":
            raise FailedPrecondition(f"hijacked request already {self.state}")
        reason = _REASONS.get(status, "")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        await self._write_head(head.encode("latin-1") + body)
        self.state = "replied"


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
            400: "Bad Request", 404: "Not Found", 409: "Conflict", 500: "Internal Server Error"}

class _PrefixedReader(asyncio.StreamReader):
    """A reader that first returns the bytes h11 had already read past the request head, then
    reads the socket's own reader -- only as the handler asks, so a client streaming stdin
    is held back by the socket (no copy of everything it sends)."""

    def __init__(self, prefix: bytes, source: asyncio.StreamReader) -> None:
        super().__init__()
        self._prefix = prefix
        self._source = source

    def _take(self, n: int) -> bytes:
        if n < 0:
            n = len(self._prefix)
        data, self._prefix = self._prefix[:n], self._prefix[n:]
        return data

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if self._prefix:
            data = self._take(n)
            return data + await self._source.read(-1) if n < 0 else data
        return await self._source.read(n)

    async def readexactly(self, n: int) -> bytes:
        data = self._take(n)
        if len(data) < n:
            data += await self._source.readexactly(n - len(data))
        return data

    async def readline(self) -> bytes:
        end = self._prefix.find(b"\n")
        if end >= 0:
            return self._take(end + 1)
        return self._take(-1) + await self._source.readline()

    def at_eof(self) -> bool:
        return not self._prefix and self._source.at_eof()


HijackHandler = Callable[[HijackRequest], Awaitable[None]]


@dataclass(frozen=True)
class HijackRoute:
    """``HijackRoute("POST", "/containers/{id}/attach", handler)``; the path is unprefixed."""

    method: str
    pattern: str
    handler: HijackHandler

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method.upper() != self.method.upper():
            return None
        found = _compile(self.pattern).fullmatch(path)
        if found is None:
            return None
        return {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}


_COMPILED: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    regex = _COMPILED.get(pattern)
    if regex is None:
        parts = re.split(r"\{(\w+)\}", pattern)
        text = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)"
                       for i, p in enumerate(parts))
        regex = _COMPILED[pattern] = re.compile(text)
    return regex


def find_route(routes: Sequence[HijackRoute], method: str, path: str,
               ) -> tuple[HijackRoute, dict[str, str]] | None:
    for route in routes:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None
