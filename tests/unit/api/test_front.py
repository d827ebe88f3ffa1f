"""The HTTP front on a real unix socket: keep-alive with hijack and ASGI requests on one
connection, streaming, HEAD, body limits, disconnects, malformed requests."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from pathlib import Path

import h11

from pydeskd.api.server import body_limit_for
from tests.unit.api.front_helpers import Probe, RawClient, header, run, running_front

UPGRADE = [("Host", "d"), ("Connection", "Upgrade"), ("Upgrade", "tcp"),
           ("Content-Type", "application/json")]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


def test_hijack_and_asgi_requests_share_one_keep_alive_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        probe = Probe()
        async with running_front(tmp_path, probe) as sock:
            client = await RawClient.open(sock)
            head, body = await client.get("/v1.45/hello")
            assert head.status_code == 200 and json.loads(body) == {"hello": "world"}
            # A hijack route that fails before upgrading answers a JSON error, keeps the line.
            await client.send(h11.Request(method="POST", target="/containers/missing/attach",
                                          headers=[*UPGRADE, ("Content-Length", "0")]),
                              h11.EndOfMessage())
            head, body = await client.response()
            assert head.status_code == 404
            assert json.loads(body) == {"message": "No such container: missing"}
            client.h11.start_next_cycle()
            head, body = await client.get("/hello")
            assert head.status_code == 200
            # Now a real upgrade on the same connection: raw bytes from here on.
            client.writer.write(b"POST /v1.50/containers/abc/attach?stream=1 HTTP/1.1\r\n"
                                b"Host: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                                b"Content-Length: 0\r\n\r\n")
            await client.writer.drain()
            head_bytes = await read_head(client.reader)
            assert head_bytes.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
            assert b"Content-Type: application/vnd.docker.raw-stream\r\n" in head_bytes
            assert b"Upgrade: tcp\r\n" in head_bytes
            client.writer.write(b"hello ")
            await client.writer.drain()
            assert await asyncio.wait_for(client.reader.readexactly(6), 5) == b"HELLO "
            # Half-close: our write side ends, the handler sees EOF and still writes to us.
            client.writer.write(b"world")
            client.writer.write_eof()
            rest = await asyncio.wait_for(client.reader.read(), 5)
            assert rest == b"WORLDbye"
            client.close()
    run(scenario)


def test_hijack_without_upgrade_streams_raw_after_a_200(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_front(tmp_path, Probe()) as sock:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            # stdin bytes sent right behind the request: the parser already read them.
            writer.write(b"POST /containers/abc/attach HTTP/1.1\r\nHost: d\r\n"
                         b"Content-Length: 2\r\n\r\n{}early")
            writer.write_eof()
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"application/vnd.docker.raw-stream" in head
            assert b"chunked" not in head.lower() and b"content-length" not in head.lower()
            assert await asyncio.wait_for(reader.read(), 5) == b"EARLYbye"
            writer.close()
    run(scenario)


def test_streamed_response_is_chunked_and_flushed_chunk_by_chunk(tmp_path: Path) -> None:
    async def scenario() -> None:
        probe = Probe()
        async with running_front(tmp_path, probe) as sock:
            client = await RawClient.open(sock)
            await client.send(h11.Request(method="GET", target="/stream",
                                          headers=[("Host", "d")]), h11.EndOfMessage())
            head = await client.next_event()
            assert isinstance(head, h11.Response) and head.status_code == 200
            assert header(head, "transfer-encoding") == "chunked"
            first = await client.next_event()
            # The second chunk waits for us: what we got was sent before the stream ended.
            assert isinstance(first, h11.Data) and first.data == b"first\n"
            probe.release.set()
            second = await client.next_event()
            assert isinstance(second, h11.Data) and second.data == b"second\n"
            assert isinstance(await client.next_event(), h11.EndOfMessage)
            client.h11.start_next_cycle()
            head2, _ = await client.get("/hello")
            assert head2.status_code == 200
            client.close()
    run(scenario)


def test_head_has_headers_and_no_body_and_keeps_the_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_front(tmp_path, Probe()) as sock:
            client = await RawClient.open(sock)
            _, get_body = await client.get("/hello")
            head, body = await client.get("/hello", method="HEAD")
            assert head.status_code == 200 and body == b""
            assert header(head, "content-length") == str(len(get_body))
            again, _ = await client.get("/hello")
            assert again.status_code == 200
            client.close()
    run(scenario)


def test_declared_body_over_the_limit_is_413_with_a_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_front(tmp_path, Probe()) as sock:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(b"POST /echo HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000001\r\n\r\n{")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            assert data.startswith(b"HTTP/1.1 413 ")
            assert b'"message": "request body too large' in data
            writer.close()
    run(scenario)


def test_chunked_body_over_the_limit_is_413_and_the_app_sees_a_disconnect(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_front(tmp_path, Probe(), body_limit=1000) as sock:
            client = await RawClient.open(sock)
            await client.send(h11.Request(method="POST", target="/echo",
                                          headers=[("Host", "d"),
                                                   ("Transfer-Encoding", "chunked")]))
            for _ in range(3):
                await client.send(h11.Data(data=b"x" * 600))
            head, body = await client.response()
            assert head.status_code == 413
            assert b"too large" in body
            client.close()
    run(scenario)


def test_bodies_under_the_limit_stream_in(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_front(tmp_path, Probe()) as sock:
            client = await RawClient.open(sock)
            payload = b"y" * (3 << 20)
            await client.send(h11.Request(method="POST", target="/echo",
                                          headers=[("Host", "d"),
                                                   ("Content-Length", str(len(payload)))]),
                              h11.Data(data=payload), h11.EndOfMessage())
            head, body = await client.response()
            assert head.status_code == 200 and json.loads(body) == {"size": len(payload)}
            client.close()
    run(scenario)


def test_client_leaving_mid_request_is_an_http_disconnect(tmp_path: Path) -> None:
    async def scenario() -> None:
        probe = Probe()
        async with running_front(tmp_path, probe) as sock:
            client = await RawClient.open(sock)
            await client.send(h11.Request(method="GET", target="/wait",
                                          headers=[("Host", "d")]), h11.EndOfMessage())
            await asyncio.sleep(0.1)
            client.close()
            await asyncio.wait_for(probe.disconnected.wait(), 5)
    run(scenario)


def test_malformed_request_is_400_and_the_front_keeps_serving(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_front(tmp_path, Probe()) as sock:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(b"THIS IS NOT HTTP\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            assert data.startswith(b"HTTP/1.1 400 ")
            writer.close()
            client = await RawClient.open(sock)
            head, _ = await client.get("/hello")
            assert head.status_code == 200
            client.close()
    run(scenario)


def test_unexpected_error_is_500_with_its_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_front(tmp_path, Probe()) as sock:
            client = await RawClient.open(sock)
            head, body = await client.get("/boom")
            assert head.status_code == 500
            assert json.loads(body) == {"message": "kaboom"}
            client.close()
    run(scenario)


def test_socket_is_mode_0660_and_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "f.sock"))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves

    async def scenario() -> None:
        async with running_front(tmp_path, Probe()) as sock:
            assert stat.S_IMODE(sock.stat().st_mode) == 0o660
            client = await RawClient.open(sock)
            head, _ = await client.get("/hello")
            assert head.status_code == 200
            client.close()
        assert not sock.exists()
    run(scenario)


def test_upload_routes_have_no_body_limit() -> None:
    assert body_limit_for("POST", "/images/load") is None
    assert body_limit_for("PUT", "/containers/abc/archive") is None
    assert body_limit_for("POST", "/containers/create") == 100_000_000
    assert body_limit_for("GET", "/images/load") == 100_000_000
