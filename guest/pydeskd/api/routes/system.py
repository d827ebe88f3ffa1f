"""System routes: ``_ping``, ``version``, ``info``, ``events``.

What it is for: what every client calls first (docker-py and the CLI ping and negotiate the
API version), and the event stream.

What it must never do: compute host facts per request beyond what the daemon gives.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from pydeskd.api.versions import CURRENT_API_VERSION, MIN_API_VERSION
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.events import Event, EventFilter, Subscription, parse_timestamp

router = APIRouter()

_PING_HEADERS = {
    "API-Version": str(CURRENT_API_VERSION),
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Builder-Version": "1",
    "Swarm": "inactive",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


def daemon_of(request: Request) -> Any:
    return request.app.state.daemon


@router.api_route("/_ping", methods=["GET", "HEAD"])
async def ping(request: Request) -> Response:
    body = b"OK" if request.method == "GET" else b""
    headers = dict(_PING_HEADERS)
    response = Response(body, media_type="text/plain; charset=utf-8", headers=headers)
    if request.method == "HEAD":
        # Docker answers HEAD /_ping with Content-Length 0.
        response.headers["content-length"] = "0"
    return response


@router.get("/version")
def version(request: Request) -> JSONResponse:
    return JSONResponse(daemon_of(request).version(str(CURRENT_API_VERSION),
                                                   str(MIN_API_VERSION)))


@router.get("/info")
def info(request: Request) -> JSONResponse:
    daemon = daemon_of(request)
    return JSONResponse(daemon.info(events_listeners=daemon.events.subscriber_count))


def parse_filters(text: str | None) -> dict[str, list[str]]:
    """Docker's ``filters`` query value: ``{"key": ["v", ...]}`` or the old
    ``{"key": {"v": true}}`` form; InvalidArgument when it is neither."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"invalid filters: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("invalid filters: want a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        elif isinstance(value, dict):
            out[key] = [k for k, on in value.items() if on]
        else:
            raise InvalidArgument(f"invalid filters: values of {key!r} must be strings")
    return out


@router.get("/events")
async def events(request: Request, since: str | None = None, until: str | None = None,
                 filters: str | None = None) -> StreamingResponse:
    bus = daemon_of(request).events
    flt = EventFilter.parse(parse_filters(filters))
    since_ns = parse_timestamp(since) if since else None
    until_ns = parse_timestamp(until) if until else None
    past, sub = bus.subscribe(flt, since_ns, until_ns)

    async def stream() -> AsyncIterator[bytes]:
        for ev in past:
            yield _line(ev)
        # An ``until`` in the past: only the buffered events, as Docker does.
        if until_ns is not None and until_ns <= time.time_ns():
            return
        while True:
            timeout = None
            if until_ns is not None:
                timeout = max(0.0, (until_ns - time.time_ns()) / 1e9)
            try:
                ev = await asyncio.wait_for(sub.get(), timeout)
            except TimeoutError:
                return
            if ev is None:  # the daemon is shutting down
                return
            if until_ns is not None and ev.time_nano > until_ns:
                return
            yield _line(ev)

    return _EventStream(stream(), sub)


class _EventStream(StreamingResponse):
    """Closes the subscription however the stream ends (also when the generator never ran
    because the client left first)."""

    def __init__(self, content: AsyncIterator[bytes], sub: Subscription) -> None:
        super().__init__(content, media_type="application/json")
        self._sub = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._sub.close()


def _line(ev: Event) -> bytes:
    return json.dumps(ev.to_json(), separators=(",", ":")).encode() + b"\n"
