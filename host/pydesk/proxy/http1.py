"""HTTP/1.1 message framing for the proxy, sans-io: heads parsed, bodies delimited, bytes kept.

What it is for: the proxy forwards each message byte for byte, but must know where every message
ends -- to find the next request of a keep-alive connection, to take the create body out for
rewriting, and to see the response that turns the connection into a raw stream (a hijack). Heads
become :class:`RequestHead`/:class:`ResponseHead`; a :class:`Body` is fed bytes and says how many
belong to the message, what they decode to, and when the message is complete.

What it must never do: perform I/O, or change a byte it forwards (a chunked body stays chunked).
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD_LIMIT = 64 * 1024
"""Longest request or response head accepted (Docker's own servers take 1 MiB of headers;
docker clients send well under 8 KiB)."""


class FramingError(Exception):
    """The peer did not speak HTTP/1.1 as framed here (the connection cannot continue)."""


Header = tuple[str, str]


def _header_value(headers: tuple[Header, ...], name: str) -> str | None:
    name = name.lower()
    found = None
    for key, value in headers:
        if key.lower() == name:
            found = value if found is None else f"{found}, {value}"
    return found


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


def _parse_headers(lines: list[str]) -> tuple[Header, ...]:
    headers: list[Header] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise FramingError(f"malformed header line {line[:60]!r}")
        headers.append((name, value.strip()))
    return tuple(headers)


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: tuple[Header, ...]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        return _header_value(self.headers, name)

    @property
    def chunked(self) -> bool:
        return "chunked" in _tokens(self.header("transfer-encoding"))

    @property
    def wants_upgrade(self) -> bool:
        return "upgrade" in _tokens(self.header("connection")) and bool(self.header("upgrade"))

    def body(self) -> Body:
        """A request without Content-Length or chunked coding has no body (RFC 9112, 6.3)."""
        if self.chunked:
            return ChunkedBody()
        return LengthBody(_content_length(self.header("content-length")))

    def encode(self, headers: tuple[Header, ...] | None = None) -> bytes:
        lines = [f"{self.method} {self.target} {self.version}"]
        lines += [f"{k}: {v}" for k, v in (self.headers if headers is None else headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: tuple[Header, ...]

    def header(self, name: str) -> str | None:
        return _header_value(self.headers, name)

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    def body(self, request_method: str) -> Body:
        """RFC 9112, 6.3: no body after HEAD, 1xx, 204, 304; chunked; length; else until close."""
        if request_method == "HEAD" or self.status < 200 or self.status in (204, 304):
            return LengthBody(0)
        if "chunked" in _tokens(self.header("transfer-encoding")):
            return ChunkedBody()
        length = self.header("content-length")
        if length is not None:
            return LengthBody(_content_length(length))
        return UntilCloseBody()


def _content_length(value: str | None) -> int:
    if value is None:
        return 0
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not values.pop().isdigit():
        raise FramingError(f"invalid Content-Length {value!r}")
    return int(value.split(",")[0])


def split_head(buffer: bytes | bytearray) -> tuple[bytes, int] | None:
    """(head without its blank line, bytes it took) if ``buffer`` holds a whole head."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > HEAD_LIMIT:
            raise FramingError(f"message head longer than {HEAD_LIMIT} bytes")
        return None
    return bytes(buffer[:end]), end + 4


def parse_request_head(head: bytes) -> RequestHead:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise FramingError(f"malformed request line {lines[0][:80]!r}")
    return RequestHead(parts[0], parts[1], parts[2], _parse_headers(lines[1:]))


def parse_response_head(head: bytes) -> ResponseHead:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise FramingError(f"malformed status line {lines[0][:80]!r}")
    return ResponseHead(version, int(code), reason, _parse_headers(lines[1:]))


class Body:
    """Delimits one message body in the byte stream."""

    done: bool = False

    def feed(self, data: bytes) -> tuple[int, bytes]:
        """(bytes of ``data`` that belong to this body, their decoded payload)."""
        raise NotImplementedError


class LengthBody(Body):
    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0

    def feed(self, data: bytes) -> tuple[int, bytes]:
        taken = min(self.remaining, len(data))
        self.remaining -= taken
        self.done = self.remaining == 0
        return taken, data[:taken]


class UntilCloseBody(Body):
    """A response body delimited by the connection's end: everything belongs to it."""

    def feed(self, data: bytes) -> tuple[int, bytes]:
        return len(data), data


class ChunkedBody(Body):
    """Chunked coding (RFC 9112, 7.1), tracked through size lines, data, CRLFs and trailers."""

    _LINE_LIMIT = 4096

    def __init__(self) -> None:
        self._state = "size"  # size -> data -> data-crlf -> size ... -> trailer -> done
        self._line = bytearray()
        self._remaining = 0

    def feed(self, data: bytes) -> tuple[int, bytes]:
        pos = 0
        payload = bytearray()
        while pos < len(data) and not self.done:
            if self._state == "data":
                take = min(self._remaining, len(data) - pos)
                payload += data[pos:pos + take]
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "data-crlf"
                continue
            # size, data-crlf and trailer states read whole lines.
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                pos = len(data)
                if len(self._line) > self._LINE_LIMIT:
                    raise FramingError("chunk size line too long")
                break
            self._line += data[pos:newline + 1]
            pos = newline + 1
            line = bytes(self._line).rstrip(b"\r\n")
            self._line.clear()
            self._line_done(line)
        return pos, bytes(payload)

    def _line_done(self, line: bytes) -> None:
        if self._state == "size":
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise FramingError(f"invalid chunk size {size_text[:20]!r}") from None
            if size < 0:
                raise FramingError("negative chunk size")
            self._remaining = size
            self._state = "data" if size else "trailer"
        elif self._state == "data-crlf":
            if line:
                raise FramingError("chunk data not followed by CRLF")
            self._state = "size"
        elif not line:  # trailer: ends with an empty line
            self.done = True
