"""Helpers for the HTTP front tests: a test app, a hijack echo route, a raw h11 client.

Everything runs on one asyncio loop per test (``asyncio.run``), the front on a unix socket in
``tmp_path``; the client speaks bytes, so the tests see exactly what goes over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, StreamingResponse

from pydeskd.api import errors
from pydeskd.api.app import VersionPrefix
from pydeskd.api.hijack import HijackRequest, HijackRoute
from pydeskd.api.server import HttpFront
from pydeskd.containerd.errors import NotFound


class Probe:
    """What the test app saw, for the assertions."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.stdin_eof = asyncio.Event()


class Body(BaseModel):
    Name: str
    Count: int = 0


def make_app(probe: Probe) -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.api_route("/hello", methods=["GET", "HEAD"])
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    @app.post("/typed")
    def typed(body: Body) -> dict[str, Any]:
        return {"name": body.Name, "count": body.Count}

    @app.get("/missing")
    def missing() -> None:
        raise NotFound("no such thing: x")

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            await probe.release.wait()
            yield b"second\n"
        return StreamingResponse(chunks(), media_type="application/json")

    @app.get("/wait")
    async def wait(request: Request) -> JSONResponse:
        while not await request.is_disconnected():
            await asyncio.sleep(0.01)
        probe.disconnected.set()
        return JSONResponse({})

    return app


async def echo_handler(request: HijackRequest) -> None:
    """Upper-cases stdin back until EOF (half-close), then says bye and ends."""
    if request.params["id"] == "missing":
        raise NotFound(f"No such container: {request.params['id']}")
    reader, writer = await request.upgrade()
    while data := await reader.read(1024):
        writer.write(data.upper())
        await writer.drain()
    writer.write(b"bye")
    await writer.drain()


HIJACKS = [HijackRoute("POST", "/containers/{id}/attach", echo_handler)]


@contextlib.asynccontextmanager
async def running_front(tmp_path: Path, probe: Probe, body_limit: int = 100_000_000,
                        ) -> AsyncIterator[Path]:
    front = HttpFront(VersionPrefix(make_app(probe)), HIJACKS, body_limit=body_limit)
    sock = tmp_path / "f.sock"
    await front.listen_unix(sock, group=None)
    try:
        yield sock
    finally:
        await front.shutdown(grace=1.0)


class RawClient:
    """One connection; ``request`` sends bytes, ``response`` parses one response with h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    @staticmethod
    async def open(sock: Path) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        return RawClient(reader, writer)

    async def send(self, *events: Any) -> None:
        for event in events:
            self.writer.write(self.h11.send(event))
        await self.writer.drain()

    async def next_event(self, timeout: float = 5.0) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            self.h11.receive_data(data)

    async def response(self, timeout: float = 5.0) -> tuple[h11.Response, bytes]:
        head = await self.next_event(timeout)
        assert isinstance(head, h11.Response), head
        body = b""
        while True:
            event = await self.next_event(timeout)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        return head, body

    async def get(self, path: str, method: str = "GET") -> tuple[h11.Response, bytes]:
        await self.send(h11.Request(method=method, target=path, headers=[("Host", "d")]),
                        h11.EndOfMessage())
        head, body = await self.response()
        self.h11.start_next_cycle()
        return head, body

    def close(self) -> None:
        self.writer.close()


def header(response: h11.Response, name: str) -> str | None:
    for key, value in response.headers:
        if key.decode() == name.lower():
            return str(value.decode())
    return None


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario(), timeout)
    asyncio.run(bounded())


def serve_in_thread(front: HttpFront, sock: Path) -> tuple[asyncio.AbstractEventLoop,
                                                           threading.Thread]:
    """Serve ``front`` on the unix socket ``sock`` from an event loop in a thread of its own
    (for tests whose client side is blocking); undo with ``stop_served``."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(front.listen_unix(sock, group=None))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    return loop, thread


def stop_served(front: HttpFront, loop: asyncio.AbstractEventLoop,
                thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(front.shutdown(1.0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
