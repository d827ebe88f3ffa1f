"""Fan-out of output: framing per subscriber, and a slow client is dropped, never waited for."""

from __future__ import annotations

import os
import socket

from pydeskd.shim import protocol as p
from pydeskd.shim.jsonlog import JsonFileLog
from pydeskd.shim.stdio import Fanout, OutputPump, Subscriber


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_fanout_frames_and_ends_every_subscriber() -> None:
    fanout = Fanout(framed=True)
    pairs = [socket.socketpair() for _ in range(2)]
    subs = [Subscriber(server) for server, _ in pairs]
    for sub in subs:
        fanout.subscribe(sub)
        sub.start_writer()
    fanout.publish(p.Stream.STDOUT, b"a")
    fanout.publish(p.Stream.STDERR, b"b")
    fanout.end()
    for (server, client), sub in zip(pairs, subs, strict=True):
        assert sub.done.wait(5)
        assert _read_all(client) == p.frame(p.Stream.STDOUT, b"a") + p.frame(p.Stream.STDERR, b"b")
        server.close()
        client.close()
    late_server, late_client = socket.socketpair()
    late = Subscriber(late_server)
    fanout.subscribe(late)  # after the end: ends at once
    late.start_writer()
    assert late.done.wait(5) and _read_all(late_client) == b""
    late_server.close()
    late_client.close()


def test_slow_client_is_dropped_not_waited_for() -> None:
    server, client = socket.socketpair()
    fanout = Fanout(framed=False)
    sub = Subscriber(server, limit=1024)
    fanout.subscribe(sub)  # no writer running: the client reads nothing
    for _ in range(10):
        fanout.publish(p.Stream.STDOUT, b"x" * 200)  # returns at once, every time
    assert sub.dropped and sub.closing
    fanout.publish(p.Stream.STDOUT, b"more")  # the dropped client is gone from the fanout
    assert client.recv(10) == b""  # shut down
    server.close()
    client.close()


def test_pump_logs_and_publishes_until_eof(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    log = JsonFileLog(Path(tmp_path) / "c.log")
    fanout = Fanout(framed=True)
    server, client = socket.socketpair()
    sub = Subscriber(server)
    fanout.subscribe(sub)
    sub.start_writer()
    pump = OutputPump(fanout, log)
    out_r, out_w = os.pipe()
    pump.add(out_r, p.Stream.STDOUT)
    os.write(out_w, b"hello\nwor")
    os.write(out_w, b"ld")
    os.close(out_w)
    assert pump.wait(5)
    assert sub.done.wait(5)
    decoder = p.FrameDecoder()
    frames = decoder.feed(_read_all(client))
    assert b"".join(d for _, d in frames) == b"hello\nworld"
    log.close()
    text = (Path(tmp_path) / "c.log").read_text()
    assert '"log":"hello\\n"' in text and '"log":"world"' in text
    server.close()
    client.close()
