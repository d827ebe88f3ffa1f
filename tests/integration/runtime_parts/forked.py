"""Runs a function in a forked child and returns what it printed, or its error, through a pipe.

The child always leaves with os._exit, so pytest's process is never duplicated past the call.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable


def run_in_child(fn: Callable[[], str]) -> str:
    """Calls ``fn`` in a child; returns its string, raises AssertionError with its traceback."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        status = 0
        try:
            payload = "ok:" + fn()
        except BaseException:
            payload = "error:" + traceback.format_exc()
            status = 1
        try:
            os.write(write_fd, payload.encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as reader:
        while chunk := reader.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    if not text.startswith("ok:"):
        raise AssertionError(f"child failed (wait status {status}):\n{text}")
    return text[3:]
