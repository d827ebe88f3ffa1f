"""The control socket's request handling, against a stand-in for the Shim (no runtime, no root):
error replies for bad requests, and a request line never swallows the attach bytes after it."""

from __future__ import annotations

import socket
import threading
from typing import Any

from pydeskd.shim import control
from pydeskd.shim import protocol as p


class FakeShim:
    """Only what control.py calls for these requests; the real Shim is tested as root."""

    def __init__(self) -> None:
        self.done = threading.Event()

    def state(self, exec_id: str | None) -> p.ProcessState:
        if exec_id is not None:
            raise p.ShimError(p.ErrorKind.NOT_FOUND, f"no exec {exec_id!r}")
        return p.ProcessState("c1", None, p.Status.RUNNING, 42)

    def kill(self, exec_id: str | None, signal: int, all_processes: bool = False) -> None:
        raise RuntimeError("the runtime blew up")


def _exchange(raw: bytes) -> bytes:
    server, client = socket.socketpair()
    shim: Any = FakeShim()
    worker = threading.Thread(target=control._handle, args=(shim, server))
    worker.start()
    client.sendall(raw)
    client.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := client.recv(4096):
        reply += chunk
    worker.join(5)
    client.close()
    return reply


def test_state_reply() -> None:
    result = p.decode_reply(_exchange(p.encode_request(p.StateRequest())))
    assert p.ProcessState.from_dict(result) == p.ProcessState("c1", None, p.Status.RUNNING, 42)


def test_error_replies_carry_their_kind() -> None:
    cases = [
        (b"garbage\n", p.ErrorKind.INVALID),
        (b'{"method":"state","bogus":1}\n', p.ErrorKind.INVALID),
        (p.encode_request(p.StateRequest("nope")), p.ErrorKind.NOT_FOUND),
        (p.encode_request(p.KillRequest(None, signal=9)), p.ErrorKind.FAILED),
    ]
    for raw, kind in cases:
        reply = _exchange(raw)
        try:
            p.decode_reply(reply)
        except p.ShimError as e:
            assert e.kind is kind, (raw, reply)
        else:
            raise AssertionError(f"{raw!r} got {reply!r}")


def test_request_line_reader_stops_at_the_newline() -> None:
    server, client = socket.socketpair()
    client.sendall(b'{"method":"attach"}\nstdin bytes')
    assert control._recv_line(server) == b'{"method":"attach"}\n'
    assert server.recv(100) == b"stdin bytes"
    server.close()
    client.close()
