"""The runtime's log: ``--log FILE`` in runc's text or JSON format, for the shim to read.

containerd-style callers read the last "error" entry of this file to explain a failure, so
errors go here as well as to stderr. Appends only. Only :func:`configure` raises (a log path
that cannot be opened at all); writing never does: a broken log must not turn a success into
a failure.
"""

from __future__ import annotations

import os
import time

_path: str | None = None
_format = "text"
_debug = False


def configure(path: str | None, fmt: str, debug: bool) -> None:
    """Sets the log up; raises OSError if ``path`` cannot be opened for appending (as runc, a
    log that cannot be written is a usage error, reported before the command runs)."""
    global _path, _format, _debug
    if path is not None:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
    _path, _format, _debug = path, fmt, debug


def debug_enabled() -> bool:
    return _debug


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def write(level: str, message: str) -> None:
    if _path is None or (level == "debug" and not _debug):
        return
    import json  # here, not at the top: ~8 ms that start/kill/delete pay only when they log

    if _format == "json":
        line = json.dumps({"level": level, "msg": message, "time": _timestamp()})
    else:
        line = f"time={json.dumps(_timestamp())} level={level} msg={json.dumps(message)}"
    try:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)
    except OSError:
        return


def error(message: str) -> None:
    write("error", message)


def warning(message: str) -> None:
    write("warning", message)
    os.write(2, f"pydesk-runc: warning: {message}\n".encode(errors="replace"))
