"""Clients that leave long streams on silent containers must not exhaust the daemon: killed
``docker attach`` sessions, and raw ``wait`` / ``logs -f`` requests closed after the headers.
After them the daemon still answers at once, and its threads return to what they were."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import Pydeskd

LEAVING = 300  # more than the daemon's 256 workers


def _threads(d: Pydeskd) -> int:
    assert d.proc is not None
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def _leave_after_headers(d: Pydeskd, method: str, path: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(d.socket))
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"
                     .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "the daemon closed before the headers"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head


def _threads_after_a_request(d: Pydeskd) -> int:
    """The daemon's threads, read after a sync request: the worker pool retires its workers
    idle for 10 s only when it is given new work."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(d.socket))
        sock.sendall(b"GET /v1.47/containers/json HTTP/1.1\r\nHost: d\r\n"
                     b"Connection: close\r\n\r\n")
        while sock.recv(65536):
            pass
    return _threads(d)


def _eventually(check: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def _answers_fast(d: Pydeskd) -> None:
    started = time.monotonic()
    d.docker("version", timeout=10)
    d.docker("ps", timeout=10)
    assert time.monotonic() - started < 5


def _quiet(d: Pydeskd, name: str = "quiet") -> str:
    return out(d, "run", "-d", "--name", name, BUSYBOX, "sleep", "99999")


def test_killed_attach_sessions_free_their_streams(d: Pydeskd) -> None:
    _quiet(d)
    out(d, "run", "-d", "--name", "other", BUSYBOX, "sleep", "99999")
    baseline = _threads(d)
    for _ in range(8):
        proc = d.popen_docker("attach", "quiet", stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        proc.kill()
        proc.wait()
    assert out(d, "exec", "other", "echo", "still here", timeout=15) == "still here"
    assert _eventually(lambda: _threads(d) <= baseline + 2)


def test_waiters_that_leave_free_their_workers(d: Pydeskd) -> None:
    _quiet(d)
    _answers_fast(d)
    baseline = _threads_after_a_request(d)
    for _ in range(LEAVING):
        _leave_after_headers(d, "POST", "/v1.47/containers/quiet/wait")
    _answers_fast(d)
    assert _eventually(lambda: _threads_after_a_request(d) <= baseline + 4)


def test_followers_that_leave_free_their_workers(d: Pydeskd) -> None:
    _quiet(d)
    _answers_fast(d)
    baseline = _threads_after_a_request(d)
    for _ in range(LEAVING):
        _leave_after_headers(d, "GET", "/v1.47/containers/quiet/logs?follow=1&stdout=1")
    _answers_fast(d)
    assert _eventually(lambda: _threads_after_a_request(d) <= baseline + 4)
