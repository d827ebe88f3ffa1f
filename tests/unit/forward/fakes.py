"""A recording forward backend (stands in for QEMU, which the integration tier runs for real)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

from pydesk.forward.backend import BackendUnavailable, PortInUse
from pydesk.forward.desired import Forward


class RecordingBackend:
    """Keeps rules in a set; ports in ``taken`` are refused as in use; ``down`` fails all."""

    def __init__(self, rules: set[Forward] | None = None, *, taken: set[int] | None = None,
                 down: bool = False) -> None:
        self.rules = set(rules or ())
        self.taken = set(taken or ())
        self.down = down
        self.calls: list[tuple[str, Forward]] = []
        self.changed = threading.Condition()

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailable("QEMU is down")

    def list(self) -> frozenset[Forward]:
        self._check()
        return frozenset(self.rules)

    def add(self, forward: Forward) -> None:
        self._check()
        self.calls.append(("add", forward))
        if forward.host_port in self.taken:
            raise PortInUse(f"host port {forward.host_port} is already in use")
        with self.changed:
            self.rules.add(forward)
            self.changed.notify_all()

    def remove(self, forward: Forward) -> None:
        self._check()
        self.calls.append(("remove", forward))
        with self.changed:
            self.rules.discard(forward)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[frozenset[Forward]], bool], timeout: float) -> bool:
        """Until ``predicate(rules)`` holds (called under the lock)."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(frozenset(self.rules)), timeout)


class FakeDaemon:
    """The Engine API routes the forwarder reads, served on socketpairs (stands in for pydeskd,
    which the integration tier runs for real): containers as inspect dicts, chunked events."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.streams: list[socket.socket] = []
        self.up = True
        self.end_streams_at_once = False
        self.lock = threading.Lock()
        self.requests: list[str] = []

    def open(self) -> socket.socket:
        if not self.up:
            raise ConnectionRefusedError("daemon down")
        mine, theirs = socket.socketpair()
        threading.Thread(target=self._serve, args=(theirs,), daemon=True).start()
        return mine

    def _serve(self, sock: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                sock.close()
                return
            head += data
        path = head.split(b" ")[1].decode()
        with self.lock:
            self.requests.append(path)
        if path.startswith("/events"):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            if self.end_streams_at_once:
                sock.sendall(b"0\r\n\r\n")
                sock.close()
                return
            with self.lock:
                self.streams.append(sock)
            return
        status, body = self._route(path)
        sock.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        sock.close()

    def _route(self, path: str) -> tuple[int, bytes]:
        with self.lock:
            if path == "/containers/json":
                rows = [{"Id": cid} for cid, c in self.containers.items()
                        if (c.get("State") or {}).get("Running")]
                return 200, json.dumps(rows).encode()
            cid = path.split("/")[2]
            if cid in self.containers:
                return 200, json.dumps(self.containers[cid]).encode()
        return 404, b'{"message": "No such container"}'

    def emit(self, action: str, cid: str) -> None:
        line = json.dumps({"Type": "container", "Action": action, "status": action,
                           "id": cid, "Actor": {"ID": cid, "Attributes": {}}}).encode() + b"\n"
        # Split in two chunks, to exercise reassembly across chunks.
        payload = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n"
                           for p in (line[:7], line[7:]))
        with self.lock:
            for s in list(self.streams):
                try:
                    s.sendall(payload)
                except OSError:
                    self.streams.remove(s)

    def stop(self) -> None:
        """The daemon goes away: streams end, new connections are refused."""
        with self.lock:
            self.up = False
            for s in self.streams:
                with contextlib.suppress(OSError):
                    s.sendall(b"0\r\n\r\n")
                s.close()
            self.streams.clear()

    def start(self) -> None:
        self.up = True

    def stream_count(self) -> int:
        with self.lock:
            return len(self.streams)
