"""The few lines of HTTP/1.1 that ``ps`` and ``images`` use instead of docker-py."""

from __future__ import annotations

from pydesk.cli.context import dechunk, parse_response


def test_plain_body() -> None:
    raw = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]'
    assert parse_response(raw) == (200, b"[]")


def test_chunked_body_with_extensions() -> None:
    raw = (b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3;ext=1\r\n{\"m\r\n8\r\nessage\":\r\n4\r\n\"x\"}\r\n0\r\n\r\n")
    assert parse_response(raw) == (404, b'{"message":"x"}')


def test_dechunk_empty() -> None:
    assert dechunk(b"0\r\n\r\n") == b""
