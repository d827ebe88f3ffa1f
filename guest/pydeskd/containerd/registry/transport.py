"""HTTP for the registry client: one seam (``Backend``) over urllib3, and the policy around it.

What it is for: every registry, token-server and blob-storage request goes through
``Transport.request``, which adds what the distribution protocol needs and urllib3 must not do on
its own:

- redirects are followed here, not by urllib3, so that ``Authorization`` is sent only to the host
  it was meant for: blob downloads redirect to storage hosts (S3, a CDN) that must never see a
  registry token;
- bounded retries with exponential backoff on connection errors, 429 and 500/502/503/504
  (``Retry-After`` honoured up to a limit), for requests the caller marks retryable;
- bodies stream (``Reply.stream``); nothing is decoded (a gzip layer stays gzip bytes);
- registry errors (``{"errors": [{"code", "message"}]}``) become the containerd layer's errors in
  one place (``raise_for_status``).

What it must never do: send ``Authorization`` across hosts, put a URL's query string (upload
state, signed storage URLs) or any header value into an error message, or verify TLS less than
urllib3's default (only registries configured as insecure use plain http, chosen in ``hosts``).
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import urllib3
from urllib3.exceptions import HTTPError

from pydeskd.containerd.errors import (
    ContainerdError,
    InvalidArgument,
    NotFound,
    Unauthorized,
    Unavailable,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
_MAX_ERROR_BODY = 64 * 1024
_MAX_RETRY_AFTER = 10.0
_DRAIN_LIMIT = 64 * 1024


class ConnectionFailed(Exception):
    """The request could not be sent or its answer could not be read (refused, reset, timeout).

    The message names the cause only; ``Transport`` adds the (query-less) URL.
    """


class RawResponse(Protocol):
    """What a ``Backend`` returns. ``headers`` lookups are case-insensitive."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def stream(self, amt: int) -> Iterator[bytes]:
        """The body in pieces of at most ``amt`` bytes. Raises ConnectionFailed."""
        ...

    def release(self) -> None:
        """Give the connection back (or close it when the body was not read to its end)."""
        ...


class Backend(Protocol):
    """The seam: one HTTP exchange, no redirects, no retries. Must be thread-safe."""

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float) -> RawResponse:
        """Raises ConnectionFailed when no response could be read."""
        ...


class _Urllib3Response:
    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    def stream(self, amt: int) -> Iterator[bytes]:
        try:
            yield from self._response.stream(amt, decode_content=False)
        except (HTTPError, OSError) as e:
            raise ConnectionFailed(_cause(e)) from None

    def release(self) -> None:
        response = self._response
        original = getattr(response, "_original_response", None)
        remaining = getattr(response, "length_remaining", None)
        if original is not None and original.isclosed():
            pass  # read to its end: urllib3 already gave the connection back to the pool
        elif remaining is not None and remaining <= _DRAIN_LIMIT:
            # A HEAD, or a small unread body: reading it keeps the connection reusable.
            try:
                response.drain_conn()
            except (HTTPError, OSError):
                response.close()
        else:
            # A large unread body (an aborted download) would poison a pooled connection.
            response.close()
        response.release_conn()


_CONNECTION_PREFIX = re.compile(r"^(?:<[^>]*>|\w*Connection(?:Pool)?\([^)]*\)): ")


def _cause(e: BaseException) -> str:
    """A short cause: "connection refused", "timeout", or urllib3's text without its leading
    connection repr (``HTTPConnection(host=..., port=...): ``); the caller adds the URL."""
    reason = getattr(e, "reason", None)
    if isinstance(reason, BaseException):
        e = reason
    text = str(e)
    if "Connection refused" in text:
        return "connection refused"
    # NewConnectionError (and NameResolutionError) subclass ConnectTimeoutError: not timeouts.
    if isinstance(e, urllib3.exceptions.TimeoutError) \
            and not isinstance(e, urllib3.exceptions.NewConnectionError):
        return "timeout"
    return _CONNECTION_PREFIX.sub("", text)


class Urllib3Backend:
    """The real seam: a pooled, thread-safe urllib3 ``PoolManager`` with default TLS checks."""

    def __init__(self, connect_timeout: float = 30.0, pool_size: int = 8) -> None:
        self._connect_timeout = connect_timeout
        self._pool = urllib3.PoolManager(num_pools=32, maxsize=pool_size, block=False,
                                         retries=False)

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float) -> RawResponse:
        try:
            response = self._pool.request(
                method, url, body=body, headers=dict(headers), preload_content=False,
                decode_content=False, redirect=False, retries=False,
                timeout=urllib3.Timeout(connect=min(self._connect_timeout, timeout),
                                        read=timeout))
        except (HTTPError, OSError) as e:
            raise ConnectionFailed(_cause(e)) from None
        return _Urllib3Response(response)


def safe_url(url: str) -> str:
    """``url`` without its query and fragment, fit for an error message."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class Reply:
    """A response after redirects and retries. Use as a context manager, or call ``close``."""

    def __init__(self, raw: RawResponse, url: str, method: str) -> None:
        self._raw = raw
        self.url = url  # the URL that answered (after redirects): Location resolves against it
        self.method = method
        self.status = raw.status
        self.headers = raw.headers

    def header(self, name: str, default: str = "") -> str:
        value = self.headers.get(name)
        return default if value is None else value

    def stream(self, amt: int = 1 << 20) -> Iterator[bytes]:
        """Raises ConnectionFailed if the connection breaks mid-body."""
        return self._raw.stream(amt)

    def read(self, limit: int) -> bytes:
        """The body, up to ``limit`` bytes (InvalidArgument if larger). Raises Unavailable."""
        out = bytearray()
        try:
            for piece in self._raw.stream(min(limit + 1, 1 << 20)):
                out += piece
                if len(out) > limit:
                    raise InvalidArgument(
                        f"response from {safe_url(self.url)} is larger than {limit} bytes")
        except ConnectionFailed as e:
            raise Unavailable(f"{self.method} {safe_url(self.url)}: {e}") from None
        return bytes(out)

    def close(self) -> None:
        self._raw.release()

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (pa.scheme, pa.netloc.lower()) == (pb.scheme, pb.netloc.lower())


class Transport:
    """Redirects, retries and timeouts over a ``Backend``; thread-safe (holds no per-request
    state). ``sleep`` is injectable so retry tests do not wait."""

    def __init__(self, backend: Backend | None = None, *, max_attempts: int = 4,
                 backoff: float = 0.2, timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.backend: Backend = backend if backend is not None else Urllib3Backend()
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.timeout = timeout
        self._sleep = sleep

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, *, retry: bool = True) -> Reply:
        """Send, follow redirects, retry transient failures; return the final reply.

        A retryable failure that persists becomes ``Unavailable`` naming the URL and the cause
        (connection errors), or is returned as the last reply (statuses: see
        ``raise_for_status``). Raises Unavailable, InvalidArgument (a redirect loop).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = self._follow(method, url, dict(headers or {}), body)
            except ConnectionFailed as e:
                if not retry or attempt >= self.max_attempts:
                    raise Unavailable(f"{method} {safe_url(url)}: {e}") from None
                self._sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if reply.status in RETRY_STATUSES and retry and attempt < self.max_attempts:
                delay = self.backoff * 2 ** (attempt - 1)
                after = reply.header("Retry-After")
                if after.isdigit():
                    delay = max(delay, min(float(after), _MAX_RETRY_AFTER))
                reply.close()
                self._sleep(delay)
                continue
            return reply

    def _follow(self, method: str, url: str, headers: dict[str, str],
                body: bytes | None) -> Reply:
        origin = url
        for _ in range(MAX_REDIRECTS + 1):
            send = headers
            if not _same_origin(origin, url):
                # The credentials were for the origin; storage hosts get none of them.
                send = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            raw = self.backend.request(method, url, send, body, self.timeout)
            location = raw.headers.get("Location")
            if raw.status not in REDIRECT_STATUSES or not location:
                return Reply(raw, url, method)
            raw.release()
            url = urllib.parse.urljoin(url, location)
            if raw.status == 303 and method != "HEAD":
                method, body = "GET", None
        raise InvalidArgument(f"{method} {safe_url(origin)}: more than {MAX_REDIRECTS} redirects")


# --- registry errors -------------------------------------------------------------------------

_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN",
                              "BLOB_UPLOAD_UNKNOWN"})
_UNAUTHORIZED_CODES = frozenset({"UNAUTHORIZED", "DENIED"})


def _error_text(reply: Reply) -> tuple[list[str], str]:
    """(codes, "code: message; ...") from a registry error body, as Docker prints them."""
    try:
        body = reply.read(_MAX_ERROR_BODY)
        doc = json.loads(body) if body else {}
    except (ContainerdError, ValueError):
        return [], ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return [], ""
    codes, texts = [], []
    for error in errors:
        if not isinstance(error, dict):
            continue
        code = str(error.get("code") or "UNKNOWN")
        message = str(error.get("message") or "")
        codes.append(code)
        described = code.lower().replace("_", " ")
        texts.append(f"{described}: {message}" if message else described)
    return codes, "; ".join(texts)


def registry_error(reply: Reply) -> ContainerdError:
    """The containerd error for a failed registry reply (reads and closes it)."""
    with reply:
        codes, text = _error_text(reply)
    where = f"{reply.method} {safe_url(reply.url)}"
    text = text or f"unexpected status {reply.status}"
    if any(c in _NOT_FOUND_CODES for c in codes) or (reply.status == 404 and not codes):
        return NotFound(text if codes else f"{where}: not found")
    if any(c in _UNAUTHORIZED_CODES for c in codes) or reply.status in (401, 403):
        return Unauthorized(text)
    if reply.status == 429 or reply.status >= 500 or "TOOMANYREQUESTS" in codes:
        return Unavailable(f"{where}: {text}")
    return InvalidArgument(f"{where}: {text}")


def raise_for_status(reply: Reply, *ok: int) -> Reply:
    """Return ``reply`` if its status is in ``ok`` (any 2xx when empty); else raise its error."""
    if (reply.status in ok) if ok else (200 <= reply.status < 300):
        return reply
    raise registry_error(reply)
