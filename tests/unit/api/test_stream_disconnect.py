"""Clients that leave ``POST /containers/{id}/wait`` and ``GET .../logs?follow=1`` on an idle
container must free what served them: the worker pool must still answer other routes, and
the threads must end.

The container routes run under the real HTTP front (on a unix socket, its loop in a thread)
over a stand-in service: a wait that is never met, a log that never grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from pydeskd.api.app import create_app
from pydeskd.api.server import HttpFront
from pydeskd.daemon.logs import LogEntry, LogOptions, read_logs
from tests.unit.api.front_helpers import serve_in_thread, stop_served

CLIENTS = 60  # more than anyio's default 40 workers in this process


class FakeContainer:
    id = "c" * 64
    tty = True


class FakeService:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.exited = threading.Event()

    def get(self, name: str) -> FakeContainer:
        return FakeContainer()

    def list(self, options: Any, size: bool = False) -> list[dict[str, Any]]:
        return []

    def waiter(self, name: str, condition: str) -> Callable[[float | None], tuple[int, str]]:
        def block(timeout: float | None) -> tuple[int, str]:
            if not self.exited.wait(timeout):
                raise TimeoutError("still running")
            return 7, ""
        return block

    def logs(self, cid: str, options: LogOptions,
             stop: threading.Event | None = None) -> Iterator[LogEntry]:
        return read_logs(self.log, options, lambda: True, stop)


class FakeDaemon:
    def __init__(self, service: FakeService) -> None:
        self.containers = service


class Front:
    def __init__(self, base: Path) -> None:
        log = base / "ctr.log"
        log.write_text(json.dumps({"log": "hello\n", "stream": "stdout",
                                   "time": "2026-01-01T00:00:00.000000000Z"}) + "\n")
        self.service = FakeService(log)
        self.socket = base / "d.sock"
        self.front = HttpFront(create_app(FakeDaemon(self.service),
                                          modules=("pydeskd.api.routes.containers",)))
        self.loop, self.thread = serve_in_thread(self.front, self.socket)

    def borrowed_workers(self) -> float:
        async def read() -> float:
            return anyio.to_thread.current_default_thread_limiter().borrowed_tokens
        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(5)

    def request(self, method: str, path: str, timeout: float = 5) -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket))
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    def leave_after_headers(self, method: str, path: str) -> None:
        """Send the request, read the response head, close (a killed client)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"
                         .encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, "the daemon closed before the headers"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data

    def close(self) -> None:
        self.service.exited.set()
        stop_served(self.front, self.loop, self.thread)


@pytest.fixture
def front() -> Iterator[Front]:
    base = Path(tempfile.mkdtemp(prefix="pdsd-", dir="/tmp"))
    f = Front(base)
    yield f
    with contextlib.suppress(Exception):  # cleanup: the directory still goes
        f.close()
    shutil.rmtree(base, ignore_errors=True)


def _eventually(check: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _blocking_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "pydeskd-blocking")


def test_waiters_that_leave_free_their_threads(front: Front) -> None:
    for _ in range(CLIENTS):
        front.leave_after_headers("POST", "/v1.47/containers/x/wait")
    started = time.monotonic()
    assert front.request("GET", "/v1.47/containers/json").startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 2
    assert _eventually(lambda: _blocking_threads() == 0 and front.borrowed_workers() == 0)


def test_followers_that_leave_free_their_workers(front: Front) -> None:
    for _ in range(CLIENTS):
        front.leave_after_headers("GET", "/v1.47/containers/x/logs?follow=1&stdout=1")
    started = time.monotonic()
    assert front.request("GET", "/v1.47/containers/json").startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 2
    assert _eventually(lambda: front.borrowed_workers() == 0)


def test_a_wait_that_stays_gets_the_exit_code(front: Front) -> None:
    timer = threading.Timer(1.2, front.service.exited.set)  # past a few wait slices
    timer.start()
    try:
        reply = front.request("POST", "/v1.47/containers/x/wait")
    finally:
        timer.cancel()
    assert reply.startswith(b"HTTP/1.1 200")
    assert b'"StatusCode": 7' in reply
