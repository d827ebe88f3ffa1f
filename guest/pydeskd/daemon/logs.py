"""Reading a container's json-file log (``docker logs``), across its rotated files.

The shim writes the log (:mod:`pydeskd.shim.jsonlog`): one JSON object per line, ``{"log",
"stream", "time"}``, rotated as ``<name>.1`` (newest old file) ... ``<name>.N``. This module
reads it back as Docker's json-file reader does: stdout/stderr selection, ``since``/``until``
(nanoseconds, exclusive/inclusive as Docker: entries before since are skipped, entries after
until end the read), ``tail`` N (the last N entries, over all files), ``timestamps`` (the entry's
time, RFC 3339 with 9 fixed fraction digits, then a space, before the payload) and ``follow``
(polls for new lines, follows a rotation, and ends once the container has stopped and the file
is drained).

What it must never do: write to the log, or block forever: every wait is a short poll that
re-checks whether the container still runs and whether the consumer asked to stop.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydeskd.daemon.containers.timeutil import parse_rfc3339_ns

POLL_INTERVAL = 0.05
FOLLOW_CHUNK = 1 << 20  # bytes a follow reads per pass (it checks ``stop`` between passes)


@dataclass(frozen=True)
class LogOptions:
    stdout: bool = True
    stderr: bool = True
    since_ns: int = 0          # 0: from the start
    until_ns: int = 0          # 0: no end
    timestamps: bool = False
    tail: int = -1             # -1: all
    follow: bool = False


@dataclass(frozen=True)
class LogEntry:
    stream: str               # "stdout" | "stderr"
    data: bytes               # the payload, with the timestamp prefix when asked
    time_ns: int


def format_timestamp(ns: int) -> str:
    """Go's RFC3339NanoFixed in UTC: always 9 fraction digits."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def log_files(path: Path) -> list[Path]:
    """The log's files, oldest first: ``path.N`` ... ``path.1``, ``path``."""
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        prefix = path.name + "."
        for entry in path.parent.iterdir():
            suffix = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and suffix.isdigit():
                rotated.append((int(suffix), entry))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def parse_line(line: bytes) -> tuple[str, bytes, int] | None:
    """(stream, payload, time ns) of one log line; None for a line that is not an entry."""
    try:
        obj = json.loads(line)
        stream = str(obj["stream"])
        payload = str(obj["log"]).encode("utf-8", "surrogateescape")
        stamp = parse_rfc3339_ns(str(obj["time"]))
    except (ValueError, KeyError, TypeError):
        return None
    return stream, payload, stamp


class _Selector:
    def __init__(self, options: LogOptions) -> None:
        self.options = options
        self.ended = False   # an entry after ``until`` was seen

    def pick(self, line: bytes) -> LogEntry | None:
        parsed = parse_line(line)
        if parsed is None:
            return None
        stream, payload, stamp = parsed
        opts = self.options
        if opts.until_ns and stamp > opts.until_ns:
            self.ended = True
            return None
        if opts.since_ns and stamp < opts.since_ns:
            return None
        if (stream == "stdout" and not opts.stdout) or (stream == "stderr" and not opts.stderr):
            return None
        if stream not in ("stdout", "stderr"):
            return None
        if opts.timestamps:
            payload = format_timestamp(stamp).encode() + b" " + payload
        return LogEntry(stream, payload, stamp)


def read_logs(path: Path, options: LogOptions,
              running: Callable[[], bool] = lambda: False,
              stop: threading.Event | None = None) -> Iterator[LogEntry]:
    """The entries of the log at ``path`` by ``options``, read line by line (a log of any
    size is never held whole: only ``tail`` entries are). With ``follow``, waits for more
    while ``running()`` is true and ``stop`` is not set."""
    selector = _Selector(options)
    if options.tail == 0 and not options.follow:
        return
    files = log_files(path)
    # The current file is opened first, so a rotation between listing and reading cannot
    # make us miss the lines that move into ``path.1``: what we read of the old files is
    # what they held at listing time, and the open descriptor keeps the current file.
    current = open(path, "rb") if path.exists() else None  # noqa: SIM115 (kept for follow)
    try:
        old_files = files[:-1] if current is not None and files else files
        if options.tail == 0:
            old_files = []
        partial: list[bytes] = []  # the current file's unterminated last line, for follow
        past = _past(old_files, current, selector, partial)
        if options.tail > 0:
            yield from collections.deque(past, maxlen=options.tail)
        elif options.tail < 0:
            yield from past
        else:
            collections.deque(past, maxlen=0)  # only to reach the end of the current file
        if not options.follow or selector.ended:
            return
        pending = partial[0] if partial else b""
        yield from _follow(path, current, pending, selector, running=running, stop=stop)
    finally:
        if current is not None:
            current.close()


def _past(old_files: list[Path], current: BinaryIO | None, selector: _Selector,
          partial: list[bytes]) -> Iterator[LogEntry]:
    """The entries already written: the old files', then the current file's up to its last
    complete line (an unterminated one is put in ``partial``)."""
    for f in old_files:
        try:
            fh = open(f, "rb")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            continue
        with fh:
            for line in fh:
                entry = selector.pick(line)
                if entry is not None:
                    yield entry
    if current is None:
        return
    # Only what the file held when the request came: a writer faster than this reader would
    # otherwise keep the past going forever, and a follow's stop is checked only after it.
    remaining = os.fstat(current.fileno()).st_size - current.tell()
    while remaining > 0:
        line = current.readline(remaining)
        if not line:
            return
        remaining -= len(line)
        if not line.endswith(b"\n"):
            partial.append(line)
            return
        entry = selector.pick(line)
        if entry is not None:
            yield entry


def _follow(path: Path, current: BinaryIO | None, pending: bytes, selector: _Selector, *,
            running: Callable[[], bool], stop: threading.Event | None) -> Iterator[LogEntry]:
    fh = current
    try:
        while True:
            # Checked on every pass, not only when idle: a log that keeps growing (with lines
            # this reader may filter out) must not keep a reader whose client left.
            if stop is not None and stop.is_set():
                return
            if fh is None:
                if path.exists():
                    fh = open(path, "rb")  # noqa: SIM115 (closed below)
                else:
                    if not running():
                        return
                    time.sleep(POLL_INTERVAL)
                    continue
            # In bounded chunks, so a fast writer cannot keep one pass going forever.
            data = fh.read(FOLLOW_CHUNK)
            if data:
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    entry = selector.pick(line)
                    if selector.ended:
                        return
                    if entry is not None:
                        yield entry
                continue
            if _rotated(path, fh):
                # The writer moved on to a new file: the old one is drained (read returned
                # nothing), so switch to the new one from its start.
                if fh is not current:
                    fh.close()
                fh, pending = None, b""
                continue
            if not running():
                # One last drain: the exit is recorded only after the output is drained.
                while data := fh.read(FOLLOW_CHUNK):
                    lines = (pending + data).split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        entry = selector.pick(line)
                        if selector.ended:
                            return
                        if entry is not None:
                            yield entry
                return
            time.sleep(POLL_INTERVAL)
    finally:
        if fh is not None and fh is not current:
            fh.close()


def _rotated(path: Path, fh: BinaryIO) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    then = os.fstat(fh.fileno())
    return (now.st_ino, now.st_dev) != (then.st_ino, then.st_dev)
