"""One proxied connection against fake peers (socket pairs): keep-alive, byte-exact bodies, the
create rewrite, local errors in order, the hijack switch with half-close, an absent upstream."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pydesk.proxy.connection import VM_DOWN_MESSAGE, Connection
from pydesk.proxy.rewrite import RewriteError
from pydesk.proxy.streams import SocketStream, Stream

TIMEOUT = 10


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        assert chunk, f"EOF after {got!r}"
        got += chunk
    return got


def recv_until(sock: socket.socket, needle: bytes) -> bytes:
    got = b""
    while needle not in got:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before {needle!r} in {got!r}"
        got += chunk
    return got


def recv_to_eof(sock: socket.socket) -> bytes:
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def rewrite(body: bytes) -> bytes:
    data = json.loads(body)
    if data.get("fail"):
        raise RewriteError("no such host path", 400)
    data["rewritten"] = True
    return json.dumps(data).encode()


@dataclass
class Rig:
    client: socket.socket  # what the test writes as the docker client
    daemon: socket.socket  # what the test answers as the guest daemon
    opened: list[Stream]
    thread: threading.Thread


@pytest.fixture
def rig() -> Iterator[Rig]:
    client, proxy_side = socket.socketpair()
    daemon, upstream_side = socket.socketpair()
    for s in (client, daemon):
        s.settimeout(TIMEOUT)
    opened: list[Stream] = []

    def opener() -> Stream:
        stream = SocketStream(upstream_side)
        opened.append(stream)
        return stream

    connection = Connection(proxy_side, opener, rewrite)
    thread = threading.Thread(target=connection.run, daemon=True)
    thread.start()
    yield Rig(client, daemon, opened, thread)
    connection.abort()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    client.close()
    daemon.close()


PING = b"GET /_ping HTTP/1.1\r\nHost: api\r\n\r\n"
PONG = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"


def test_keep_alive_bodies_forwarded_byte_for_byte(rig: Rig) -> None:
    upload = (b"PUT /containers/x/archive?path=/ HTTP/1.1\r\nHost: api\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    rig.client.sendall(PING)
    assert recv_exactly(rig.daemon, len(PING)) == PING
    rig.daemon.sendall(PONG)
    assert recv_exactly(rig.client, len(PONG)) == PONG
    rig.client.sendall(upload + PING)
    assert recv_exactly(rig.daemon, len(upload + PING)) == upload + PING
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{}\r\n\r\n0\r\n\r\n")
    rig.daemon.sendall(chunked + PONG)
    assert recv_exactly(rig.client, len(chunked + PONG)) == chunked + PONG
    assert len(rig.opened) == 1


def test_create_body_rewritten_with_a_new_length(rig: Rig) -> None:
    body = json.dumps({"Image": "busybox"}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    rig.client.sendall(b"POST /v1.47/containers/create?name=a HTTP/1.1\r\nHost: api\r\n"
                       b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + chunked)
    head = recv_until(rig.daemon, b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1.47/containers/create?name=a HTTP/1.1"
    assert b"Transfer-Encoding: chunked" not in head
    length = int(next(line for line in lines if line.startswith(b"Content-Length: "))[16:])
    sent = head.split(b"\r\n\r\n", 1)[1]
    sent += recv_exactly(rig.daemon, length - len(sent))
    assert json.loads(sent) == {"Image": "busybox", "rewritten": True}


def test_create_with_expect_continue(rig: Rig) -> None:
    body = b'{"Image": "x"}'
    rig.client.sendall(b"POST /containers/create HTTP/1.1\r\nHost: api\r\nExpect: 100-continue"
                       b"\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert recv_exactly(rig.client, 25) == b"HTTP/1.1 100 Continue\r\n\r\n"
    rig.client.sendall(body)
    head = recv_until(rig.daemon, b"\r\n\r\n")
    assert b"Expect" not in head and b"Content-Length: 33" in head


def test_rewrite_error_answered_in_order_and_the_connection_goes_on(rig: Rig) -> None:
    bad = json.dumps({"fail": True}).encode()
    rig.client.sendall(PING + b"POST /containers/create HTTP/1.1\r\nHost: api\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(bad), bad))
    assert recv_exactly(rig.daemon, len(PING)) == PING
    # The ping's answer is still due: the 400 must wait for it.
    rig.daemon.sendall(PONG)
    answer = recv_until(rig.client, b"}\n")
    assert answer.startswith(PONG + b"HTTP/1.1 400 Bad Request\r\n")
    assert json.loads(answer.split(b"\r\n\r\n")[-1]) == {"message": "no such host path"}
    rig.client.sendall(PING)
    assert recv_exactly(rig.daemon, len(PING)) == PING


def test_oversized_create_refused(rig: Rig) -> None:
    rig.client.sendall(b"POST /containers/create HTTP/1.1\r\nHost: api\r\n"
                       b"Content-Length: 99999999\r\n\r\n{")
    answer = recv_to_eof(rig.client)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer
    assert b"over 16 MiB" in answer


def test_hijack_raw_both_ways_with_half_close(rig: Rig) -> None:
    request = (b"POST /v1.47/exec/abc/start HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\n"
               b"Upgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    rig.client.sendall(request)
    assert recv_exactly(rig.daemon, len(request)) == request
    upgraded = (b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
    rig.daemon.sendall(upgraded + b"early output")
    assert recv_exactly(rig.client, len(upgraded) + 12) == upgraded + b"early output"
    # What follows is the container's bytes: even text shaped like HTTP is not parsed.
    rig.client.sendall(b"GET / HTTP/1.1\r\n\r\nstdin")
    assert recv_exactly(rig.daemon, 23) == b"GET / HTTP/1.1\r\n\r\nstdin"
    rig.client.shutdown(socket.SHUT_WR)  # stdin ends: the daemon reads EOF ...
    assert rig.daemon.recv(10) == b""
    rig.daemon.sendall(b"output after stdin ended")  # ... and output still flows
    rig.daemon.close()
    assert recv_to_eof(rig.client) == b"output after stdin ended"


def test_hijack_without_upgrade_is_a_raw_stream_until_close(rig: Rig) -> None:
    request = b"POST /containers/c/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: api\r\n\r\n"
    rig.client.sendall(request)
    assert recv_exactly(rig.daemon, len(request)) == request
    rig.daemon.sendall(b"HTTP/1.1 200 OK\r\n"
                       b"Content-Type: application/vnd.docker.multiplexed-stream\r\n\r\n"
                       b"\x01\x00\x00\x00\x00\x00\x00\x02hi")
    rig.client.sendall(b"typed")
    assert recv_exactly(rig.daemon, 5) == b"typed"
    rig.daemon.close()
    assert recv_to_eof(rig.client).endswith(b"\x02hi")


def test_candidate_answered_with_an_error_stays_http(rig: Rig) -> None:
    request = (b"POST /exec/nope/start HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\n"
               b"Upgrade: tcp\r\nContent-Length: 2\r\n\r\n{}")
    rig.client.sendall(request)
    recv_exactly(rig.daemon, len(request))
    error = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
             b"Content-Length: 21\r\n\r\n{\"message\":\"no exec\"}")
    rig.daemon.sendall(error)
    assert recv_exactly(rig.client, len(error)) == error
    rig.client.sendall(PING)
    assert recv_exactly(rig.daemon, len(PING)) == PING


def test_streamed_logs_are_not_a_hijack(rig: Rig) -> None:
    request = b"GET /containers/c/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: api\r\n\r\n"
    rig.client.sendall(request)
    recv_exactly(rig.daemon, len(request))
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream"
                b"\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    rig.daemon.sendall(response)
    assert recv_exactly(rig.client, len(response)) == response
    rig.client.sendall(PING)
    assert recv_exactly(rig.daemon, len(PING)) == PING


def test_upstream_closing_ends_the_client_connection(rig: Rig) -> None:
    rig.client.sendall(PING)
    recv_exactly(rig.daemon, len(PING))
    rig.daemon.sendall(PONG)
    rig.daemon.close()  # an idle keep-alive connection the daemon drops
    assert recv_to_eof(rig.client) == PONG
    rig.thread.join(TIMEOUT)
    assert not rig.thread.is_alive()


def test_client_closing_closes_the_upstream(rig: Rig) -> None:
    rig.client.sendall(b"GET /events HTTP/1.1\r\nHost: api\r\n\r\n")
    recv_until(rig.daemon, b"\r\n\r\n")
    rig.daemon.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    recv_until(rig.client, b"\r\n\r\n")
    rig.client.close()  # a Ctrl-C'd `docker events`: the stream must not linger upstream
    assert recv_to_eof(rig.daemon) == b""
    rig.thread.join(TIMEOUT)
    assert not rig.thread.is_alive()


def test_malformed_request_gets_a_400_and_the_end(rig: Rig) -> None:
    rig.client.sendall(b"GET /_ping HTTP/1.1\r\nHost: api\r\n\r\n")
    recv_exactly(rig.daemon, 33)
    rig.client.sendall(b"NONSENSE\r\n\r\n")
    rig.daemon.sendall(PONG)  # the earlier request is answered first
    answer = recv_to_eof(rig.client)
    assert answer.startswith(PONG + b"HTTP/1.1 400 Bad Request\r\n")
    assert b"malformed request line" in answer


def test_client_half_close_still_gets_its_response(rig: Rig) -> None:
    rig.client.sendall(PING)
    rig.client.shutdown(socket.SHUT_WR)  # done sending, still reading
    assert recv_exactly(rig.daemon, len(PING)) == PING
    assert rig.daemon.recv(10) == b""  # the half-close reached the daemon
    rig.daemon.sendall(PONG)
    rig.daemon.close()
    assert recv_to_eof(rig.client) == PONG


def test_no_upstream_gives_a_docker_shaped_502() -> None:
    client, proxy_side = socket.socketpair()
    client.settimeout(TIMEOUT)

    def opener() -> Stream:
        raise ConnectionRefusedError("connection refused")

    thread = threading.Thread(target=Connection(proxy_side, opener, rewrite).run, daemon=True)
    thread.start()
    client.sendall(PING)
    answer = recv_to_eof(client)
    thread.join(TIMEOUT)
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]
    assert message.startswith(VM_DOWN_MESSAGE) and "connection refused" in message
    client.close()
