"""One request of a keep-alive connection, served by an ASGI application (the FastAPI app).

What it is for: the HTTP front parses with h11; this turns the parsed request into an ASGI
``http`` scope with ``receive``/``send`` that stream the body in and the response out. A response
without a Content-Length goes out chunked, chunk by chunk as the app sends it, with the headers
flushed at ``http.response.start`` -- so ``/events``, pull progress and ``logs -f`` stream, and a
client waiting for the headers of a long stream gets them at once, as Docker sends them.

After the request body, the bridge watches the socket: when the client goes away, ``receive``
returns ``http.disconnect`` (ASGI 2.3: Starlette's StreamingResponse listens for it and stops
the stream) and later ``send`` calls are dropped.

What it must never do: let an application error escape into the connection loop, or write a
response body to a HEAD request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from typing import Any

import h11
from starlette.requests import ClientDisconnect

from pydeskd.api.errors import error_body
from pydeskd.api.http_conn import ClientGone, HttpConnection, reason

log = logging.getLogger(__name__)

# ASGI callables, loosely typed: the app is FastAPI, the messages are dicts.
Message = dict[str, Any]

# After the body, the watcher reads ahead at most this much of a pipelined next request.
_READ_AHEAD = 64 * 1024




class AsgiCycle:
    """Serve ``request`` (whose head h11 has parsed) with ``app``. ``run`` returns whether the
    connection can carry another request."""

    def __init__(self, conn: HttpConnection, request: h11.Request, app: Any,
                 body_limit: int | None, server: tuple[str, int] | None) -> None:
        self.conn = conn
        self.request = request
        self.app = app
        self.body_limit = body_limit
        self.server = server
        self.method = request.method.decode("ascii")
        self.body_done = False
        self.body_size = 0
        self.response_started = False
        self.response_done = False
        # ``disconnected``: what receive reports to the app (also set when the body is refused);
        # ``gone``: the client really left, so nothing more can be written.
        self.disconnected = asyncio.Event()
        self.gone = False
        self.watcher: asyncio.Task[None] | None = None
        self.continue_sent = False
        self.too_large = False
        self.pending = b""  # response head held back to go out with a sized body
        self.status = 0

    def scope(self) -> Message:
        target = self.request.target
        raw_path, _, query = target.partition(b"?")
        path = urllib.parse.unquote(raw_path.decode("latin-1"))
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in self.request.headers],
            "client": None,
            "server": self.server,
            "state": {},
            "extensions": {},
        }

    async def receive(self) -> Message:
        if not self.body_done:
            return await self._read_body()
        if self.watcher is None:
            self.watcher = asyncio.create_task(self._watch())
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def _read_body(self) -> Message:
        conn = self.conn
        if conn.h11.they_are_waiting_for_100_continue and not self.continue_sent:
            self.continue_sent = True
            with contextlib.suppress(ClientGone):
                await conn.send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            event = await conn.next_event()
        except h11.RemoteProtocolError:
            event = h11.ConnectionClosed()
        if isinstance(event, h11.Data):
            self.body_size += len(event.data)
            if self.body_limit is not None and self.body_size > self.body_limit:
                # Stop reading; the app sees the client go away, the client gets a 413 if no
                # response has started.
                self.too_large = True
                self.body_done = True
                self.disconnected.set()
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        if isinstance(event, h11.EndOfMessage):
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # ConnectionClosed or PAUSED: the client is gone mid-body.
        self.body_done = True
        self.gone = True
        self.disconnected.set()
        return {"type": "http.disconnect"}

    async def _watch(self) -> None:
        """Notice the client closing while the app works; keep any pipelined bytes for h11."""
        buffered = 0
        while buffered < _READ_AHEAD:
            try:
                data = await self.conn.reader.read(_READ_AHEAD)
            except (ConnectionError, OSError):
                data = b""
            self.conn.h11.receive_data(data)
            if not data:
                self.conn.disconnected = True
                self.gone = True
                self.disconnected.set()
                return
            buffered += len(data)

    async def send(self, message: Message) -> None:
        if self.disconnected.is_set() or self.response_done:
            return
        kind = message["type"]
        try:
            if kind == "http.response.start":
                await self._start(message)
            elif kind == "http.response.body":
                await self._body(message)
        except ClientGone:
            self.gone = True
            self.disconnected.set()

    async def _start(self, message: Message) -> None:
        if self.response_started:
            raise RuntimeError("http.response.start sent twice")
        self.response_started = True
        status = self.status = int(message["status"])
        headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        head = self.conn.h11.send(h11.Response(status_code=status, headers=headers,
                                               reason=reason(status)))
        if any(k.lower() == b"content-length" for k, _ in headers):
            # A sized response goes out in one write with its body.
            self.pending = head
        else:
            # A stream: headers now, so a client waiting for them (docker events, wait, logs
            # -f) knows the request is registered before any output.
            await self.conn.write(head)

    async def _body(self, message: Message) -> None:
        if not self.response_started:
            raise RuntimeError("http.response.body before http.response.start")
        data = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        out = self.pending
        self.pending = b""
        # h11 knows a HEAD response (and a 204/304) has no body, and refuses one.
        if data and self.method != "HEAD" and self.conn.h11.our_state is h11.SEND_BODY:
            out += self.conn.h11.send(h11.Data(data=data)) or b""
        if not more:
            out += self.conn.h11.send(h11.EndOfMessage()) or b""
            self.response_done = True
        if out:
            await self.conn.write(out)

    async def run(self) -> bool:
        keep = await self._run()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s", self.method, self.request.target.decode("latin-1"),
                      self.status or "no response")
        return keep

    async def _run(self) -> bool:
        try:
            await self.app(self.scope(), self.receive, self.send)
        except ClientDisconnect:
            pass  # the app noticed the client leaving (or the body being refused)
        except Exception as exc:
            if self.response_started:
                # Starlette's server-error middleware re-raises after replying; the API's
                # error handler has logged it already.
                log.debug("application error after the response started", exc_info=exc)
            else:
                log.error("application error", exc_info=exc)
                await self._fallback(500, error_body(f"internal error: {exc}"))
        finally:
            if self.watcher is not None:
                self.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.watcher
        if self.too_large and not self.response_started:
            limit = self.body_limit or 0
            self.status = 413
            await self._fallback(413, error_body(
                f"request body too large: the limit is {limit // (1 << 20)} MB"), close=True)
            return False
        if not self.response_done or self.conn.disconnected or self.too_large:
            return False
        return await self._drain_body()

    async def _fallback(self, status: int, body: bytes, close: bool = False) -> None:
        if self.gone or self.response_started:
            return
        self.response_started = True
        with contextlib.suppress(ClientGone):
            await self.conn.send_simple(status, body, close=close)
            self.response_done = True

    async def _drain_body(self) -> bool:
        """The app answered without reading the whole body: read and drop the rest, so the next
        request parses; give up (close) past the body limit."""
        while not self.body_done:
            message = await self._read_body()
            if message["type"] == "http.disconnect":
                return False
        return self.conn.h11.our_state is h11.DONE and self.conn.h11.their_state is h11.DONE
