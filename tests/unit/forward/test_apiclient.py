"""The sans-io response parser and the event stream over a socketpair."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from pydesk.forward.apiclient import ApiClient, ApiError, ResponseParser, StreamEnded

CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")


def feed_bytewise(parser: ResponseParser, data: bytes) -> bytes:
    return b"".join(b"".join(parser.feed(data[i:i + 1])) for i in range(len(data)))


def test_chunked_fed_one_byte_at_a_time() -> None:
    parser = ResponseParser()
    assert feed_bytewise(parser, CHUNKED) == b"hello world"
    assert parser.done and parser.status == 200


def test_content_length_and_to_eof() -> None:
    parser = ResponseParser()
    body = parser.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabcEXTRA")
    assert (parser.status, b"".join(body), parser.done) == (404, b"abc", True)
    parser = ResponseParser()
    body = parser.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil") + parser.feed(b" eof")
    assert not parser.done
    parser.feed_eof()
    assert b"".join(body) == b"until eof" and parser.done


def test_truncated_chunked_and_garbage() -> None:
    parser = ResponseParser()
    parser.feed(CHUNKED[:60])
    with pytest.raises(StreamEnded):
        parser.feed_eof()
    with pytest.raises(ApiError):
        ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ApiError):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")


def server(responses: list[bytes]) -> tuple[ApiClient, list[bytes]]:
    """A client whose every open_api() gets the next canned response; requests recorded."""
    seen: list[bytes] = []

    def open_api() -> socket.socket:
        mine, theirs = socket.socketpair()
        answer = responses.pop(0)

        def serve() -> None:
            seen.append(theirs.recv(4096))
            theirs.sendall(answer)
            theirs.close()
        threading.Thread(target=serve, daemon=True).start()
        return mine
    return ApiClient(open_api, timeout=5), seen


def test_get_json_and_error_message() -> None:
    body = json.dumps([{"Id": "a"}]).encode()
    missing = b'{"message": "No such container"}'
    client, seen = server([
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(missing) + missing,
    ])
    assert client.get_json("/containers/json") == [{"Id": "a"}]
    assert seen[0].startswith(b"GET /containers/json HTTP/1.1\r\n")
    with pytest.raises(ApiError) as e:
        client.inspect_container("x/y")
    assert e.value.status == 404 and "No such container" in str(e.value)
    assert seen[1].startswith(b"GET /containers/x%2Fy/json ")


def test_event_stream_timeouts_lines_and_end() -> None:
    mine, theirs = socket.socketpair()
    client = ApiClient(lambda: mine, timeout=5)
    theirs.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with client.events({"type": ["container"]}) as events:
        assert b"filters=%7B%22type%22%3A%5B%22container%22%5D%7D" in theirs.recv(4096)
        assert events.next(0.05) is None  # nothing yet: a timeout, not an error
        one, two = b'{"Action":"start"}\n', b'{"Action":"die"}\n'
        theirs.sendall(b"%x\r\n%s\r\n" % (len(one + two) - 3, (one + two)[:-3]))
        got = [events.next(1), events.next(0.05)]
        assert got == [{"Action": "start"}, None]  # the second line is not complete yet
        theirs.sendall(b"3\r\n%s\r\n0\r\n\r\n" % two[-3:])
        assert events.next(1) == {"Action": "die"}
        theirs.close()
        with pytest.raises(StreamEnded):
            while True:
                events.next(1)
