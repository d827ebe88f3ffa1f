"""HTTP/1.1 framing: heads, and bodies delimited byte for byte (length, chunked, until close)."""

from __future__ import annotations

import pytest

from pydesk.proxy.http1 import (
    HEAD_LIMIT,
    ChunkedBody,
    FramingError,
    LengthBody,
    UntilCloseBody,
    parse_request_head,
    parse_response_head,
    split_head,
)


def test_request_head() -> None:
    head = parse_request_head(b"POST /v1.47/containers/create?name=x HTTP/1.1\r\n"
                              b"Host: api\r\nContent-Type: application/json\r\n"
                              b"Transfer-Encoding: chunked\r\nConnection: Upgrade\r\n"
                              b"Upgrade: tcp")
    assert (head.method, head.path, head.version) == ("POST", "/v1.47/containers/create",
                                                      "HTTP/1.1")
    assert head.header("content-type") == "application/json"
    assert head.chunked and head.wants_upgrade
    assert isinstance(head.body(), ChunkedBody)
    assert head.encode() == (b"POST /v1.47/containers/create?name=x HTTP/1.1\r\nHost: api\r\n"
                             b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                             b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n")


def test_request_without_length_has_no_body() -> None:
    head = parse_request_head(b"GET /_ping HTTP/1.1\r\nHost: x")
    assert head.body().done and not head.wants_upgrade
    assert parse_request_head(b"POST /x HTTP/1.1\r\nContent-Length: 5").body().feed(
        b"abcdefg") == (5, b"abcde")


@pytest.mark.parametrize("head", [b"GET /x", b"GET /x HTTP/2", b"GET  /x HTTP/1.1",
                                  b"GET /x HTTP/1.1\r\nNoColon", b"GET /x HTTP/1.1\r\n : v",
                                  b"GET /x HTTP/1.1\r\nBad Name : v"])
def test_malformed_request_heads(head: bytes) -> None:
    with pytest.raises(FramingError):
        parse_request_head(head)


@pytest.mark.parametrize("value", ["x", "-1", "1, 2", "1e3"])
def test_invalid_content_length(value: str) -> None:
    with pytest.raises(FramingError):
        parse_request_head(f"POST /x HTTP/1.1\r\nContent-Length: {value}".encode()).body()
    # the same value repeated is one length (RFC 9110, 8.6)
    assert parse_request_head(b"POST /x HTTP/1.1\r\nContent-Length: 3, 3").body().feed(
        b"abcd") == (3, b"abc")


def test_response_bodies_by_status_and_method() -> None:
    ok = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 4")
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.body("GET").feed(b"abcdef") == (4, b"abcd")
    assert ok.body("HEAD").done
    for status in (b"204 No Content", b"304 Not Modified", b"100 Continue"):
        assert parse_response_head(b"HTTP/1.1 " + status).body("GET").done
    stream = parse_response_head(b"HTTP/1.1 200 OK\r\n"
                                 b"Content-Type: application/vnd.docker.raw-stream")
    assert stream.content_type == "application/vnd.docker.raw-stream"
    body = stream.body("POST")
    assert isinstance(body, UntilCloseBody) and body.feed(b"xyz") == (3, b"xyz")
    assert not body.done
    chunked = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked")
    assert isinstance(chunked.body("GET"), ChunkedBody)
    typed = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: Application/JSON; x=y")
    assert typed.content_type == "application/json"
    with pytest.raises(FramingError):
        parse_response_head(b"HTTP/1.1 2000 OK")
    with pytest.raises(FramingError):
        parse_response_head(b"ICY 200 OK")


def test_split_head() -> None:
    assert split_head(b"GET / HTTP/1.1\r\nA: b\r\n") is None
    assert split_head(b"GET / HTTP/1.1\r\n\r\nrest") == (b"GET / HTTP/1.1", 18)
    with pytest.raises(FramingError):
        split_head(b"x" * (HEAD_LIMIT + 1))


CHUNKED = (b"5;ext=1\r\nhello\r\n"
           b"1A\r\n" + b"z" * 26 + b"\r\n"
           b"0\r\nTrailer: x\r\n\r\n")


@pytest.mark.parametrize("piece", [1, 2, 3, 7, len(CHUNKED)])
def test_chunked_in_any_pieces(piece: int) -> None:
    body = ChunkedBody()
    stream = CHUNKED + b"NEXT"
    taken_total, payload = 0, b""
    pos = 0
    while not body.done:
        chunk = stream[pos:pos + piece]
        assert chunk, "ran out of data before the body ended"
        taken, data = body.feed(chunk)
        taken_total += taken
        payload += data
        pos += piece
        if taken < len(chunk):
            break
    assert body.done
    assert taken_total == len(CHUNKED)
    assert payload == b"hello" + b"z" * 26


def test_chunked_errors() -> None:
    with pytest.raises(FramingError):
        ChunkedBody().feed(b"zz\r\n")
    with pytest.raises(FramingError):
        ChunkedBody().feed(b"2\r\nabX\r\n")
    with pytest.raises(FramingError):
        ChunkedBody().feed(b"1" * 5000)


def test_length_body() -> None:
    body = LengthBody(5)
    assert body.feed(b"ab") == (2, b"ab") and not body.done
    assert body.feed(b"cdefg") == (3, b"cde") and body.done
    assert LengthBody(0).done
