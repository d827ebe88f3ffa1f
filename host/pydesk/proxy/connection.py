"""One client connection of the host socket, relayed to its own upstream stream.

What it is for: two threads per connection. The request side (the connection's own thread)
parses each request head, forwards it and its body as they come, and takes the create body out
for rewriting; the response side forwards each response and tells the request side when a
response turned the connection into a raw stream (a hijack: ``101``, or a raw/multiplexed
stream answering attach or exec start). From then on both directions are plain byte copies, and
a half-close travels: the client's ``shutdown(SHUT_WR)`` becomes the upstream's
``shutdown_write()`` (``docker run -i < file`` ends that way).

Replies the proxy makes itself (rewrite errors, an oversized create body, an unreachable guest)
are Docker-shaped JSON errors, written only when every earlier response is complete, so a
pipelining client still gets its answers in order.

What it must never do: change a byte of any message but the create body, read a stream's
payload after a hijack, or let an error in one connection reach another.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import re
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pydesk.proxy.http1 import (
    FramingError,
    RequestHead,
    ResponseHead,
    parse_request_head,
    parse_response_head,
    split_head,
)
from pydesk.proxy.rewrite import RewriteError
from pydesk.proxy.streams import Opener, Stream

log = logging.getLogger(__name__)

RECV_SIZE = 256 * 1024
CREATE_BODY_LIMIT = 16 * 1024 * 1024
VM_DOWN_MESSAGE = "the pydesk VM is not running (pydesk vm start)"
HIJACK_TYPES = frozenset({"application/vnd.docker.raw-stream",
                          "application/vnd.docker.multiplexed-stream"})

_CREATE = re.compile(r"^(?:/v[0-9.]+)?/containers/create/?$")
_HIJACK_ROUTE = re.compile(r"^(?:/v[0-9.]+)?/(?:containers/[^/]+/attach|exec/[^/]+/start)/?$")
_REASONS = {400: "Bad Request", 413: "Request Entity Too Large",
            500: "Internal Server Error", 502: "Bad Gateway"}

CreateRewriter = Callable[[bytes], bytes]
"""Create body in, body for the guest out; raises RewriteError."""


def is_create(request: RequestHead) -> bool:
    return request.method == "POST" and bool(_CREATE.match(request.path))


def is_hijack_candidate(request: RequestHead) -> bool:
    """A request whose response may turn the connection into a raw stream."""
    return request.wants_upgrade or (request.method == "POST"
                                     and bool(_HIJACK_ROUTE.match(request.path)))


def hijacks(request_candidate: bool, response: ResponseHead) -> bool:
    if response.status == 101:
        return True
    return (request_candidate and response.status == 200
            and response.content_type in HIJACK_TYPES)


def error_response(status: int, message: str, close: bool = False) -> bytes:
    """A JSON error as the Docker daemon sends it."""
    body = json.dumps({"message": message}).encode() + b"\n"
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode("latin-1") + body


@dataclass
class _Pending:
    """A request forwarded upstream whose response is not complete yet."""

    method: str
    candidate: bool
    decided: threading.Event = field(default_factory=threading.Event)
    hijacked: bool = False

    def decide(self, hijacked: bool) -> None:
        if not self.decided.is_set():
            self.hijacked = hijacked
            self.decided.set()


class _Closed(Exception):
    """The connection is over (a peer went away, or the proxy aborted it)."""


class Connection:
    def __init__(self, client: socket.socket, opener: Opener, rewrite: CreateRewriter) -> None:
        self.client = client
        self.opener = opener
        self.rewrite = rewrite
        self.upstream: Stream | None = None
        self._pending: collections.deque[_Pending] = collections.deque()
        self._idle = threading.Condition()
        self._client_write = threading.Lock()
        self._responses: threading.Thread | None = None

    # --- the request side (the connection's thread) ---------------------------------------
    def run(self) -> None:
        buffer = bytearray()
        try:
            self._requests(buffer)
        except (_Closed, OSError):
            pass
        except FramingError as exc:
            # As the daemon's HTTP server would answer it; the connection cannot go on.
            with contextlib.suppress(_Closed, OSError):
                self._refuse(error_response(400, f"malformed HTTP request: {exc}", close=True))
        finally:
            if self.upstream is not None:
                if self._client_gone():
                    # Closed, not half-closed (a killed CLI, a Ctrl-C'd `docker events`):
                    # nothing can read the rest, so the guest need not produce it.
                    self.abort()
                else:
                    with contextlib.suppress(OSError, EOFError):
                        self.upstream.shutdown_write()
            if self._responses is not None:
                self._responses.join()
            self._close_all()

    def _requests(self, buffer: bytearray) -> None:
        while True:
            head_bytes = self._read_head(buffer)
            if head_bytes is None:
                return
            request = parse_request_head(head_bytes[:-4])
            if self.upstream is None and not self._open_upstream():
                return
            if is_create(request):
                if not self._forward_create(request, buffer):
                    return
                continue
            entry = self._expect(request)
            self._stream_request(head_bytes, request, buffer)
            if entry.candidate:
                entry.decided.wait()
                if entry.hijacked:
                    self._copy_client_to_upstream(buffer)
                    return

    def _read_head(self, buffer: bytearray) -> bytes | None:
        """The next head with its blank line (None at a clean end of the client's data)."""
        while True:
            found = split_head(buffer)
            if found is not None:
                _, taken = found
                head = bytes(buffer[:taken])
                del buffer[:taken]
                return head
            data = self.client.recv(RECV_SIZE)
            if not data:
                if buffer.strip():
                    raise FramingError("client closed in the middle of a request head")
                return None
            buffer += data

    def _open_upstream(self) -> bool:
        try:
            self.upstream = self.opener()
        except Exception as exc:  # the opener is injected: any failure means "no guest"
            log.info("upstream unavailable: %s", exc)
            detail = str(exc).strip()
            self._reply_local(error_response(
                502, f"{VM_DOWN_MESSAGE}: {detail}" if detail else VM_DOWN_MESSAGE, close=True))
            return False
        self._responses = threading.Thread(target=self._run_responses, daemon=True,
                                           name="pydesk-proxy-responses")
        self._responses.start()
        return True

    def _expect(self, request: RequestHead) -> _Pending:
        entry = _Pending(request.method, is_hijack_candidate(request))
        with self._idle:
            self._pending.append(entry)
        return entry

    def _send_upstream(self, data: bytes | bytearray) -> None:
        assert self.upstream is not None
        try:
            self.upstream.sendall(bytes(data))
        except (OSError, EOFError) as exc:
            raise _Closed from exc

    def _recv_client(self, buffer: bytearray) -> None:
        data = self.client.recv(RECV_SIZE)
        if not data:
            raise _Closed
        buffer += data

    def _stream_request(self, head: bytes, request: RequestHead, buffer: bytearray) -> None:
        """The head, then the body as it comes (the head with the body's first part)."""
        out = bytearray(head)
        body = request.body()
        while not body.done:
            if not buffer:
                if out:
                    self._send_upstream(out)
                    out.clear()
                self._recv_client(buffer)
            taken, _ = body.feed(bytes(buffer))
            out += buffer[:taken]
            del buffer[:taken]
            self._send_upstream(out)
            out.clear()
        if out:
            self._send_upstream(out)

    def _forward_create(self, request: RequestHead, buffer: bytearray) -> bool:
        """Reads, rewrites and forwards a create request; False when the connection must end."""
        declared = request.header("content-length")
        if declared is not None and declared.strip().isdigit() \
                and int(declared) > CREATE_BODY_LIMIT:
            self._refuse(error_response(413, self._too_big(), close=True))
            return False
        body = request.body()
        if not body.done and (request.header("expect") or "").lower() == "100-continue":
            # The body is read here, not by the daemon: the interim answer is ours to give.
            self._reply_local(b"HTTP/1.1 100 Continue\r\n\r\n")
        payload = bytearray()
        while not body.done:
            if not buffer:
                self._recv_client(buffer)
            taken, data = body.feed(bytes(buffer))
            del buffer[:taken]
            payload += data
            if len(payload) > CREATE_BODY_LIMIT:
                self._refuse(error_response(413, self._too_big(), close=True))
                return False
        try:
            rewritten = self.rewrite(bytes(payload))
        except RewriteError as exc:
            self._reply_local(error_response(exc.status, exc.message))
            return True
        headers = tuple((k, v) for k, v in request.headers
                        if k.lower() not in ("content-length", "transfer-encoding", "expect"))
        headers += (("Content-Length", str(len(rewritten))),)
        self._expect(request)
        self._send_upstream(request.encode(headers) + rewritten)
        return True

    @staticmethod
    def _too_big() -> str:
        return f"container create body over {CREATE_BODY_LIMIT // (1024 * 1024)} MiB"

    def _reply_local(self, response: bytes) -> None:
        """Our own response, once every response before it is complete."""
        with self._idle:
            while self._pending:
                self._idle.wait()
        self._write_client(response)

    def _refuse(self, response: bytes) -> None:
        """A last reply (``Connection: close``): the rest of the request is never read."""
        self._reply_local(response)
        self.abort()

    def _copy_client_to_upstream(self, buffer: bytearray) -> None:
        if buffer:
            self._send_upstream(buffer)
            buffer.clear()
        while True:
            data = self.client.recv(RECV_SIZE)
            if not data:
                return  # run() half-closes the upstream
            self._send_upstream(data)

    # --- the response side --------------------------------------------------------------
    def _run_responses(self) -> None:
        buffer = bytearray()
        try:
            self._responses_loop(buffer)
        except (_Closed, OSError, EOFError):
            pass
        except FramingError as exc:
            log.warning("guest daemon framing error: %s", exc)
        finally:
            # No more responses can come: release a request side waiting for a decision and
            # any local reply waiting for its turn, and end the client's connection.
            with self._idle:
                for entry in self._pending:
                    entry.decide(False)
                self._pending.clear()
                self._idle.notify_all()
            with contextlib.suppress(OSError):
                self.client.shutdown(socket.SHUT_RDWR)

    def _recv_upstream(self, buffer: bytearray) -> None:
        assert self.upstream is not None
        data = self.upstream.recv(RECV_SIZE)
        if not data:
            raise _Closed
        buffer += data

    def _responses_loop(self, buffer: bytearray) -> None:
        while True:
            found = split_head(buffer)
            if found is None:
                self._recv_upstream(buffer)
                continue
            head, taken = found
            response = parse_response_head(head)
            with self._idle:
                if not self._pending:
                    raise FramingError("a response to no request")
                entry = self._pending[0]
            # The head goes out with the first part of the body: one write for most responses.
            out = bytearray(buffer[:taken])
            del buffer[:taken]
            if hijacks(entry.candidate, response):
                self._write_client(out)
                entry.decide(True)
                self._copy_upstream_to_client(buffer)
                return
            if 100 <= response.status < 200:
                self._write_client(out)
                continue  # interim (100 Continue): the final response follows
            entry.decide(False)
            body = response.body(entry.method)
            while not body.done:
                if not buffer:
                    if out:
                        self._write_client(out)
                        out.clear()
                    self._recv_upstream(buffer)  # until-close bodies end here, with _Closed
                taken, _ = body.feed(bytes(buffer))
                out += buffer[:taken]
                del buffer[:taken]
                self._write_client(out)
                out.clear()
            if out:
                self._write_client(out)
            with self._idle:
                self._pending.popleft()
                self._idle.notify_all()

    def _copy_upstream_to_client(self, buffer: bytearray) -> None:
        if buffer:
            self._write_client(buffer)
            buffer.clear()
        assert self.upstream is not None
        while data := self.upstream.recv(RECV_SIZE):
            self._write_client(data)

    def _write_client(self, data: bytes | bytearray) -> None:
        with self._client_write:
            try:
                self.client.sendall(data)
            except OSError as exc:
                raise _Closed from exc

    # --- ending ---------------------------------------------------------------------------
    def _client_gone(self) -> bool:
        """The client closed its socket (POLLHUP), as opposed to ``shutdown(SHUT_WR)``, after
        which it still reads what comes."""
        try:
            poller = select.poll()
            poller.register(self.client, select.POLLIN)
            return any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                       for _, events in poller.poll(0))
        except (OSError, ValueError):
            return True

    def abort(self) -> None:
        """Ends the connection now (the proxy is closing): wakes both threads."""
        with contextlib.suppress(OSError):
            self.client.shutdown(socket.SHUT_RDWR)
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                self.upstream.close()

    def _close_all(self) -> None:
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                self.upstream.close()
        with contextlib.suppress(OSError):
            self.client.close()
