"""``attach?logs=1`` on a large log with a client that does not read: the event loop stays
responsive (the log is read by workers in batches, not on the loop), and the whole log still
arrives, framed, once the client reads.

The attach route runs under the real HTTP front (its loop in a thread) over a stand-in
service whose log is a real json-file log in a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.api.app import create_app, hijack_routes
from pydeskd.api.server import HttpFront
from pydeskd.daemon.logs import LogEntry, LogOptions, read_logs
from tests.unit.api.front_helpers import serve_in_thread, stop_served

ENTRIES = 150_000
LINE = "x" * 60 + "\n"
MODULES = ("pydeskd.api.routes.containers",)


class FakeContainer:
    id = "c" * 64
    tty = False
    config: dict[str, Any] = {}


class FakeService:
    def __init__(self, log: Path) -> None:
        self.log = log

    def get(self, name: str) -> FakeContainer:
        return FakeContainer()

    def logs(self, cid: str, options: LogOptions,
             stop: threading.Event | None = None) -> Iterator[LogEntry]:
        return read_logs(self.log, options, lambda: False, stop)


class FakeDaemon:
    def __init__(self, service: FakeService) -> None:
        self.containers = service


def _write_log(path: Path) -> None:
    line = json.dumps({"log": LINE, "stream": "stdout",
                       "time": "2026-01-01T00:00:00.000000000Z"}) + "\n"
    with open(path, "w") as fh:
        for _ in range(ENTRIES):
            fh.write(line)


class Front:
    def __init__(self, base: Path) -> None:
        log = base / "ctr.log"
        _write_log(log)
        self.socket = base / "d.sock"
        self.front = HttpFront(create_app(FakeDaemon(FakeService(log)), modules=MODULES),
                               hijack_routes(MODULES))
        self.loop, self.thread = serve_in_thread(self.front, self.socket)

    def loop_latency(self) -> float:
        """How long a no-op takes to run on the loop."""
        started = time.monotonic()
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(30)
        return time.monotonic() - started

    def close(self) -> None:
        stop_served(self.front, self.loop, self.thread)


@pytest.fixture
def front() -> Iterator[Front]:
    base = Path(tempfile.mkdtemp(prefix="pdal-", dir="/tmp"))
    f = Front(base)
    yield f
    f.close()
    shutil.rmtree(base, ignore_errors=True)


def test_attach_logs_of_a_large_log_keeps_the_loop_responsive(front: Front) -> None:
    latencies: list[float] = []
    measuring = threading.Event()
    measuring.set()

    def measure() -> None:
        while measuring.is_set():
            latencies.append(front.loop_latency())
            time.sleep(0.01)

    probe = threading.Thread(target=measure)
    probe.start()
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(front.socket))
            sock.sendall(b"POST /v1.47/containers/x/attach?logs=1&stream=0&stdout=1 HTTP/1.1"
                         b"\r\nHost: d\r\nContent-Length: 0\r\nConnection: Upgrade\r\n"
                         b"Upgrade: tcp\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101")
            time.sleep(1.5)  # a slow reader: nothing read for a while
            measuring.clear()
            probe.join()
            received = bytearray()
            while data := sock.recv(1 << 20):
                received += data
    finally:
        measuring.clear()
        probe.join()
    assert max(latencies) < 0.15
    payload = bytearray()
    offset = 0
    while offset < len(received):
        stream, size = struct.unpack(">BxxxI", received[offset:offset + 8])
        assert stream == 1
        payload += received[offset + 8:offset + 8 + size]
        offset += 8 + size
    assert payload == LINE.encode() * ENTRIES


def test_reading_a_whole_log_does_not_hold_it(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    _write_log(log)
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_logs(log, LogOptions()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == ENTRIES
    assert peak < (2 << 20)  # the log is ~16 MB


def test_logs_without_follow_end_at_what_the_log_held_when_asked(tmp_path: Path) -> None:
    # `docker logs` shows the log up to the request: a writer that keeps appending while the
    # reader works must not keep it going (nor, with --follow, keep it from seeing its stop).
    log = tmp_path / "ctr.log"
    line = json.dumps({"log": "old\n", "stream": "stdout",
                       "time": "2026-01-01T00:00:00.000000000Z"}) + "\n"
    log.write_text(line * 50_000)
    entries = read_logs(log, LogOptions())
    first = next(entries)
    with log.open("a") as fh:
        fh.write(line.replace("old", "new") * 10)
    rest = list(entries)
    assert first.data == b"old\n"
    assert len(rest) == 50_000 - 1
    assert all(e.data == b"old\n" for e in rest)


def test_a_follow_stops_while_the_log_grows_with_lines_it_filters_out(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    log.write_text("")
    stop = threading.Event()
    writing = threading.Event()
    writing.set()
    line = json.dumps({"log": LINE, "stream": "stdout",
                       "time": "2026-01-01T00:00:00.000000000Z"}) + "\n"

    def write() -> None:
        with open(log, "a") as fh:
            while writing.is_set():
                fh.write(line * 100)
                fh.flush()

    follower = threading.Thread(target=lambda: list(read_logs(
        log, LogOptions(stdout=False, stderr=True, follow=True), lambda: True, stop)))
    writer = threading.Thread(target=write)
    writer.start()
    follower.start()
    try:
        time.sleep(0.3)
        stop.set()
        follower.join(1.0)
        assert not follower.is_alive()
    finally:
        writing.clear()
        writer.join()
        follower.join(5)
