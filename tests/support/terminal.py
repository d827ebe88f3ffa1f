"""A command under a real terminal (a pty), for tests of `-it`: start it, read until a needle
shows up, and never leave it running."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager


def read_until(fd: int, needle: bytes, timeout: float = 20) -> bytes:
    """What the terminal printed until ``needle`` (or EOF, or ``timeout``)."""
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    return got


@contextmanager
def under_pty(argv: Sequence[str], env: Mapping[str, str]
              ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """(process, the terminal's primary fd); the process is killed if still running after."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(list(argv), env=dict(env), stdin=secondary, stdout=secondary,
                            stderr=secondary, start_new_session=True)
    os.close(secondary)
    try:
        yield proc, primary
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
