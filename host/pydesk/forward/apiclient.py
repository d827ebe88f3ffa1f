"""A small Engine API client over any socket-like stream: JSON requests and the event stream.

What it is for: the forwarder reads ``/containers/json``, ``/containers/{id}/json`` and follows
``/events`` through whatever ``open_api()`` returns: a paramiko Channel to the guest socket (VM
mode) or a unix socket (tests). :class:`ResponseParser` is sans-io (bytes in, body pieces out;
Content-Length, chunked, or to EOF), so the parsing is tested without sockets and a read
timeout never loses half a chunk.
What it must never do: send anything but GET, or block without a timeout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

MAX_HEAD = 64 * 1024


class Stream(Protocol):
    """What ``socket.socket`` and ``paramiko.Channel`` both offer."""

    def sendall(self, data: bytes, /) -> Any: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> Any: ...
    def close(self) -> Any: ...


class ApiError(Exception):
    """The daemon answered with an error status, or not with HTTP."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class StreamEnded(ApiError):
    """The daemon closed a stream (it stopped, or restarted)."""


class ResponseParser:
    """One HTTP/1.1 response, fed in pieces: ``feed(data)`` -> body pieces decoded so far."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "head"
        self._remaining = 0
        self.status = 0
        self.headers: dict[str, str] = {}

    @property
    def head_done(self) -> bool:
        return self._state != "head"

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while self._step(out):
            pass
        return out

    def feed_eof(self) -> list[bytes]:
        """The peer closed: the body must be complete (or run to EOF)."""
        out = self.feed(b"")
        if self._state == "eof":
            self._state = "done"
        if not self.done:
            raise StreamEnded(f"the connection closed in the middle of a response "
                              f"({self._state})", self.status)
        return out

    def _step(self, out: list[bytes]) -> bool:
        buf = self._buf
        if self._state == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ApiError("response head too large")
                return False
            self._parse_head(bytes(buf[:end]))
            del buf[:end + 4]
            return True
        if self._state in ("size", "trailer"):
            end = buf.find(b"\r\n")
            if end < 0:
                return False
            line = bytes(buf[:end])
            del buf[:end + 2]
            if self._state == "trailer":
                self._state = "done" if not line else "trailer"
                return True
            try:
                self._remaining = int(line.split(b";")[0], 16)
            except ValueError as e:
                raise ApiError(f"bad chunk size {line[:20]!r}") from e
            self._state = "data" if self._remaining else "trailer"
            return True
        if self._state in ("data", "length"):
            if not buf:
                return False
            take = min(self._remaining, len(buf))
            out.append(bytes(buf[:take]))
            del buf[:take]
            self._remaining -= take
            if not self._remaining:
                self._state = "crlf" if self._state == "data" else "done"
            return True
        if self._state == "crlf":
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                raise ApiError("chunk not followed by CRLF")
            del buf[:2]
            self._state = "size"
            return True
        if self._state == "eof" and buf:
            out.append(bytes(buf))
            buf.clear()
        return False

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ApiError(f"not an HTTP response: {lines[0][:60]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            self._state = "size"
        elif "content-length" in self.headers:
            self._remaining = int(self.headers["content-length"])
            self._state = "length" if self._remaining else "done"
        elif self.status in (204, 304) or self.status < 200:
            self._state = "done"
        else:
            self._state = "eof"


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: pydesk\r\nConnection: close\r\n\r\n".encode()


def _error(status: int, body: bytes, path: str) -> ApiError:
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    return ApiError(f"GET {path}: {status} {message}".strip(), status)


class ApiClient:
    """``get_json(path)`` and ``events(path)``, each on a fresh stream from ``open_api``."""

    def __init__(self, open_api: Callable[[], Stream], timeout: float = 10.0) -> None:
        self.open_api = open_api
        self.timeout = timeout

    def get_json(self, path: str) -> Any:
        """The decoded JSON body; ApiError (with ``status``) for an error answer."""
        stream = self.open_api()
        try:
            stream.settimeout(self.timeout)
            stream.sendall(_request(path))
            parser = ResponseParser()
            body = bytearray()
            while not parser.done:
                data = stream.recv(65536)
                for piece in (parser.feed(data) if data else parser.feed_eof()):
                    body += piece
        finally:
            stream.close()
        if parser.status != 200:
            raise _error(parser.status, bytes(body), path)
        return json.loads(body)

    def inspect_container(self, container_id: str) -> Any:
        return self.get_json(f"/containers/{quote(container_id, safe='')}/json")

    def events(self, filters: dict[str, list[str]]) -> EventStream:
        path = "/events?filters=" + quote(json.dumps(filters, separators=(",", ":")))
        return EventStream(self.open_api(), path, self.timeout)


class EventStream:
    """``GET /events``: one JSON object per line; :meth:`next` waits at most ``timeout``."""

    def __init__(self, stream: Stream, path: str, timeout: float) -> None:
        self.stream = stream
        self.parser = ResponseParser()
        self.pending = bytearray()
        try:
            stream.settimeout(timeout)
            stream.sendall(_request(path))
            while not self.parser.head_done:
                data = stream.recv(65536)
                if not data:
                    raise StreamEnded(f"GET {path}: the daemon closed the connection")
                self._take(self.parser.feed(data))
            if self.parser.status != 200:
                raise ApiError(f"GET {path}: status {self.parser.status}", self.parser.status)
        except BaseException:
            stream.close()
            raise

    def _take(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.pending += piece

    def _line(self) -> dict[str, Any] | None:
        while (end := self.pending.find(b"\n")) >= 0:
            line = bytes(self.pending[:end]).strip()
            del self.pending[:end + 1]
            if line:
                event = json.loads(line)
                if isinstance(event, dict):
                    return event
        return None

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None when none came within ``timeout`` seconds. Raises
        StreamEnded when the daemon closes the stream."""
        event = self._line()
        if event is not None:
            return event
        self.stream.settimeout(timeout)
        try:
            data = self.stream.recv(65536)
        except TimeoutError:
            return None
        if not data:
            self.parser.feed_eof()
            raise StreamEnded("the daemon closed the event stream")
        self._take(self.parser.feed(data))
        return self._line()

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
