"""The container log in Docker's json-file format, with Docker's line splitting and rotation.

One JSON object per line: ``{"log": "...", "stream": "stdout"|"stderr", "time": RFC3339Nano}``.
As in Docker's log copier, a complete line keeps its ``\\n``; a line longer than 16 KiB is cut
into 16 KiB pieces without ``\\n`` (partial entries), and a last unterminated piece at EOF is
written without ``\\n`` too. As in Docker's json-file driver, the file is rotated before a write
when it has reached ``max_size`` bytes: ``container.log`` -> ``.1`` -> ``.2`` ..., keeping
``max_files`` files in all (1 = truncate in place). ``max_size`` 0 means no cap.

:class:`LineSplitter` is pure (bytes in, entries out); :class:`JsonFileLog` does the file I/O.
This module must never block on anything but the log file itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

MAX_LINE = 16 * 1024  # Docker's copier buffer: longer lines become partial entries


def rfc3339nano(ns: int) -> str:
    """UTC time as Go's RFC3339Nano: nanoseconds with trailing zeros trimmed, 'Z' suffix."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


class LineSplitter:
    """Cuts one stream's bytes into log entries: (payload, partial). Payloads keep their '\\n'."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        self._buf += data
        out: list[tuple[bytes, bool]] = []
        while True:
            nl = self._buf.find(b"\n", 0, self._max)
            if nl >= 0:
                out.append((bytes(self._buf[:nl + 1]), False))
                del self._buf[:nl + 1]
            elif len(self._buf) >= self._max:
                out.append((bytes(self._buf[:self._max]), True))
                del self._buf[:self._max]
            else:
                return out

    def finish(self) -> list[tuple[bytes, bool]]:
        """At EOF: what is left, as one partial entry."""
        if not self._buf:
            return []
        rest = bytes(self._buf)
        self._buf.clear()
        return [(rest, True)]


def encode_entry(stream: str, payload: bytes, ns: int) -> bytes:
    """One json-file line. Like Go's encoder: UTF-8 kept, invalid bytes as U+FFFD, <>& escaped."""
    text = json.dumps({"log": payload.decode("utf-8", "replace"), "stream": stream,
                       "time": rfc3339nano(ns)}, ensure_ascii=False, separators=(",", ":"))
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return text.encode() + b"\n"


class JsonFileLog:
    """The log file of one container; thread-safe. ``write`` takes raw output of one stream."""

    def __init__(self, path: Path, max_size: int = 0, max_files: int = 1) -> None:
        if max_size < 0 or max_files < 1:
            raise ValueError("log max size must be >= 0 and max files >= 1")
        self.path = path
        self._max_size = max_size
        self._max_files = max_files
        self._lock = threading.Lock()
        self._splitters: dict[str, LineSplitter] = {}
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, stream: str, data: bytes, ns: int | None = None) -> None:
        with self._lock:
            splitter = self._splitters.setdefault(stream, LineSplitter())
            self._emit(stream, splitter.feed(data), ns)

    def finish(self, stream: str, ns: int | None = None) -> None:
        """The stream reached EOF: its unterminated rest becomes a partial entry."""
        with self._lock:
            splitter = self._splitters.get(stream)
            if splitter is not None:
                self._emit(stream, splitter.finish(), ns)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _emit(self, stream: str, entries: list[tuple[bytes, bool]], ns: int | None) -> None:
        if not entries or self._fd < 0:
            return
        stamp = time.time_ns() if ns is None else ns
        for payload, _partial in entries:
            line = encode_entry(stream, payload, stamp)
            if self._max_size and self._size >= self._max_size:
                self._rotate()
            os.write(self._fd, line)
            self._size += len(line)

    def _rotate(self) -> None:
        # The old descriptor stays open until the new file is: if the open fails (EMFILE, a
        # removed directory), writes go on into the rotated file rather than into a closed
        # descriptor number that another thread may have been given meanwhile.
        if self._max_files > 1:
            for n in range(self._max_files - 1, 0, -1):
                src = self.path if n == 1 else self.path.with_name(f"{self.path.name}.{n - 1}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{n}"))
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o640)
        os.close(self._fd)
        self._fd = fd
        self._size = 0
