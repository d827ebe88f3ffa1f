"""Hijack routes: matching, request helpers, and the reply/no-stream paths through the front."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pydeskd.api.app import VersionPrefix
from pydeskd.api.hijack import Headers, HijackRequest, HijackRoute, find_route, wants_upgrade
from pydeskd.api.server import HttpFront
from pydeskd.api.versions import ApiVersion
from pydeskd.containerd.errors import InvalidArgument
from tests.unit.api.front_helpers import Probe, RawClient, make_app, run


async def _noop(_request: HijackRequest) -> None:
    return None


ROUTES = [HijackRoute("POST", "/containers/{id}/attach", _noop),
          HijackRoute("POST", "/exec/{id}/start", _noop)]


@pytest.mark.parametrize(("method", "path", "found"), [
    ("POST", "/containers/abc/attach", ("/containers/{id}/attach", {"id": "abc"})),
    ("post", "/containers/my%20name/attach", ("/containers/{id}/attach", {"id": "my name"})),
    ("POST", "/exec/e1/start", ("/exec/{id}/start", {"id": "e1"})),
    ("GET", "/containers/abc/attach", None),
    ("POST", "/containers/abc/attach/ws", None),
    ("POST", "/containers/a/b/attach", None),
])
def test_route_matching(method: str, path: str,
                        found: tuple[str, dict[str, str]] | None) -> None:
    got = find_route(ROUTES, method, path)
    assert (None if got is None else (got[0].pattern, got[1])) == found


def test_wants_upgrade() -> None:
    assert wants_upgrade(Headers([(b"Connection", b"Upgrade"), (b"Upgrade", b"tcp")]))
    assert wants_upgrade(Headers([(b"connection", b"keep-alive, upgrade"),
                                  (b"upgrade", b"tcp")]))
    assert not wants_upgrade(Headers([(b"Upgrade", b"tcp")]))
    assert not wants_upgrade(Headers([(b"Connection", b"Upgrade")]))


def _request(body: bytes, query: dict[str, list[str]]) -> HijackRequest:
    async def write(_data: bytes) -> None:
        return None
    return HijackRequest("POST", "/exec/x/start", {"id": "x"}, query, Headers([]), body,
                         ApiVersion(1, 50), None, None, write)  # type: ignore[arg-type]


def test_request_helpers() -> None:
    req = _request(b'{"Detach": true}', {"stdin": ["1"], "logs": ["false"], "x": [""]})
    assert req.json() == {"Detach": True}
    assert req.query_bool("stdin") and not req.query_bool("logs") and not req.query_bool("x")
    assert req.query_bool("missing", default=True)
    assert _request(b"", {}).json() is None
    with pytest.raises(InvalidArgument, match="invalid JSON body"):
        _request(b"{oops", {}).json()


async def _detached(request: HijackRequest) -> None:
    body = request.json()
    assert isinstance(body, dict)
    if body.get("Detach"):
        return  # the front answers an empty 200 and keeps the connection
    await request.reply(201, b'{"replied": true}')


def test_handler_that_does_not_stream(tmp_path: Path) -> None:
    async def scenario() -> None:
        routes = [HijackRoute("POST", "/exec/{id}/start", _detached)]
        front = HttpFront(VersionPrefix(make_app(Probe())), routes)
        sock = tmp_path / "h.sock"
        await front.listen_unix(sock, group=None)
        try:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            body = b'{"Detach": true}'
            writer.write(b"POST /v1.50/exec/e/start HTTP/1.1\r\nHost: d\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 0" in head
            client = RawClient(reader, writer)  # the connection still serves
            got, _ = await client.get("/hello")
            assert got.status_code == 200
            client.close()
            reader, writer = await asyncio.open_unix_connection(str(sock))
            body = b'{"Detach": false}'
            writer.write(b"POST /exec/e/start HTTP/1.1\r\nHost: d\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)  # closed after a raw reply
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 201 Created")
            assert json.loads(rest) == {"replied": True}
            writer.close()
        finally:
            await front.shutdown(1.0)
    run(scenario)


def test_invalid_json_body_is_400_before_any_upgrade(tmp_path: Path) -> None:
    async def scenario() -> None:
        routes = [HijackRoute("POST", "/exec/{id}/start", _detached)]
        front = HttpFront(VersionPrefix(make_app(Probe())), routes)
        sock = tmp_path / "h.sock"
        await front.listen_unix(sock, group=None)
        try:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(b"POST /exec/e/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\n"
                         b"Upgrade: tcp\r\nContent-Length: 3\r\n\r\n{no")
            await writer.drain()
            client = RawClient(reader, writer)
            head, body = await client.response()
            assert head.status_code == 400
            assert json.loads(body)["message"].startswith("invalid JSON body")
            writer.close()
        finally:
            await front.shutdown(1.0)
    run(scenario)
