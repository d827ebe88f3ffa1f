"""The HTTP front: pydeskd's listener, h11 on every request, hijacks served, the rest to ASGI.

What it is for: uvicorn treats ``Upgrade: tcp`` as an ordinary request and would parse the raw
stdin bytes after it as the next request, so attach and exec cannot be served by an ASGI server.
This front owns the sockets instead: it parses every request of every keep-alive connection
with h11, hands the registered hijack routes (``hijack.HijackRoute``) the raw socket, and runs
every other request through the FastAPI app (``asgi_bridge``).

Other rules kept here: a request body over ``body_limit`` (100 MB; the image and archive upload
routes are exempt) is refused with 413 and a JSON message; the unix socket is mode 0660, group
``docker`` when that group exists; ``shutdown`` stops accepting, lets requests in flight finish
for a grace period, then cancels what is left.

What it must never do: listen anywhere but the unix sockets and loopback TCP it is given, or run
route logic of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import re
import socket
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h11

from pydeskd.api.asgi_bridge import AsgiCycle
from pydeskd.api.errors import error_body, error_reply
from pydeskd.api.hijack import (
    MAX_HIJACK_BODY,
    Headers,
    HijackRequest,
    HijackRoute,
    find_route,
)
from pydeskd.api.http_conn import ClientGone, HttpConnection
from pydeskd.api.versions import check_version, split_version
from pydeskd.containerd.errors import InvalidArgument

log = logging.getLogger(__name__)

BODY_LIMIT = 100 * 1000 * 1000
# Routes whose bodies are streams of any size (image tars, archives, build contexts), unprefixed.
UNLIMITED_BODIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("POST", re.compile(r"/images/load")),
    ("POST", re.compile(r"/images/create")),
    ("PUT", re.compile(r"/containers/[^/]+/archive")),
    ("POST", re.compile(r"/build")),
)
SOCKET_GROUP = "docker"


def body_limit_for(method: str, path: str, limit: int = BODY_LIMIT) -> int | None:
    """The largest body accepted for ``method path`` (unprefixed); None: no limit."""
    for route_method, pattern in UNLIMITED_BODIES:
        if method == route_method and pattern.fullmatch(path):
            return None
    return limit


class HttpFront:
    def __init__(self, app: Any, hijack_routes: Sequence[HijackRoute] = (), *,
                 body_limit: int = BODY_LIMIT) -> None:
        self.app = app
        self.hijack_routes = list(hijack_routes)
        self.body_limit = body_limit
        self._servers: list[asyncio.Server] = []
        self._unix_paths: list[Path] = []
        self._idle: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- listeners -------------------------------------------------------------------------

    async def listen_unix(self, path: Path, mode: int = 0o660,
                          group: str | None = SOCKET_GROUP) -> None:
        _remove_stale_socket(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        server = await asyncio.start_unix_server(self._on_connect, path=str(path))
        os.chmod(path, mode)
        if group is not None:
            with contextlib.suppress(KeyError, PermissionError):
                os.chown(path, -1, grp.getgrnam(group).gr_gid)
        self._servers.append(server)
        self._unix_paths.append(path)

    async def listen_tcp(self, host: str, port: int) -> int:
        """Listen on a loopback address; returns the port (useful with port 0)."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise InvalidArgument(f"refusing to listen on {host}: loopback only")
        server = await asyncio.start_server(self._on_connect, host=host, port=port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, close idle connections, give busy ones ``grace`` seconds."""
        for server in self._servers:
            server.close()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for task in list(self._idle):
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        self._unix_paths.clear()

    # --- connections -----------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = HttpConnection(reader, writer)
        try:
            await self._serve(conn, task, _server_address(writer))
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            self._tasks.discard(task)
            self._idle.discard(task)
            conn.close()

    async def _serve(self, conn: HttpConnection, task: asyncio.Task[None],
                     server: tuple[str, int] | None) -> None:
        while True:
            self._idle.add(task)
            try:
                event = await conn.next_event()
            except h11.RemoteProtocolError as exc:
                await _bad_request(conn, exc)
                return
            finally:
                self._idle.discard(task)
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed (or PAUSED, which cannot follow a finished cycle)
            if not await self._dispatch(conn, event, server):
                return
            if conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
                return
            conn.h11.start_next_cycle()

    async def _dispatch(self, conn: HttpConnection, request: h11.Request,
                        server: tuple[str, int] | None) -> bool:
        method = request.method.decode("ascii")
        raw_path = request.target.partition(b"?")[0].decode("latin-1")
        try:
            versioned = split_version(urllib.parse.unquote(raw_path))
        except InvalidArgument:
            versioned = None
        if versioned is not None and self.hijack_routes:
            found = find_route(self.hijack_routes, method, versioned.path)
            if found is not None:
                return await self._hijack(conn, request, found[0], found[1], versioned)
        limit = None
        if versioned is not None:
            limit = body_limit_for(method, versioned.path, self.body_limit)
        length = _content_length(request)
        if limit is not None and length is not None and length > limit:
            with contextlib.suppress(ClientGone):
                await conn.send_simple(413, error_body(
                    f"request body too large: the limit is {limit // 1000_000} MB"), close=True)
            return False
        cycle = AsgiCycle(conn, request, self.app, limit, server)
        return await cycle.run()

    async def _hijack(self, conn: HttpConnection, request: h11.Request, route: HijackRoute,
                      params: dict[str, str], versioned: Any) -> bool:
        body = bytearray()
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_HIJACK_BODY:
                    await conn.send_simple(413, error_body("request body too large"), close=True)
                    return False
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return False  # the client went away before its body ended
        leftover = bytes(conn.h11.trailing_data[0])
        query = urllib.parse.parse_qs(request.target.partition(b"?")[2].decode("latin-1"),
                                      keep_blank_values=True)
        try:
            version = check_version(versioned.version)
        except InvalidArgument as exc:
            return await _error_response(conn, exc)
        hijack = HijackRequest(method=request.method.decode("ascii"), path=versioned.path,
                               params=params, query=query, headers=Headers(request.headers),
                               body=bytes(body), api_version=version, _reader=conn.reader,
                               _writer=conn.writer, _write_head=conn.write,
                               _leftover=leftover)
        try:
            await route.handler(hijack)
        except ClientGone:
            return False
        except Exception as exc:
            if hijack.state == "open":
                return await _error_response(conn, exc)
            if not isinstance(exc, (ConnectionError, OSError)):
                log.error("hijacked stream %s %s failed", hijack.method, hijack.path,
                          exc_info=exc)
            return False
        if hijack.state == "open":
            # The handler neither streamed nor replied: an empty success, as Docker's detached
            # exec start.
            with contextlib.suppress(ClientGone):
                await conn.send_simple(200, b"")
            return True
        # Streamed or replied raw: the connection is done.
        with contextlib.suppress(ConnectionError, OSError):
            await conn.writer.drain()
        return False


async def _error_response(conn: HttpConnection, exc: BaseException) -> bool:
    """Reply a Docker JSON error through h11 (declining any upgrade); keep-alive stays."""
    status, body = error_reply(exc)
    try:
        await conn.send_simple(status, body)
    except ClientGone:
        return False
    return True


async def _bad_request(conn: HttpConnection, exc: h11.RemoteProtocolError) -> None:
    if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    with contextlib.suppress(ClientGone, h11.LocalProtocolError):
        status = exc.error_status_hint
        await conn.send_simple(status, error_body(f"malformed HTTP request: {exc}"), close=True)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def _server_address(writer: asyncio.StreamWriter) -> tuple[str, int] | None:
    name = writer.get_extra_info("sockname")
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return None


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a daemon that died; refuse one that still answers."""
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise InvalidArgument(f"{path} is in use by another daemon")
