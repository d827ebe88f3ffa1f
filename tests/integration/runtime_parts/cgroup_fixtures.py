"""Helpers for the root cgroup tests: unique names, processes parked until joined, and a sweep
that removes (and reports) anything a test left under its own top-level cgroup name."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

CGROUP_ROOT = "/sys/fs/cgroup"


def unique(prefix: str = "pydesk-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def leftovers(top: str) -> list[str]:
    """Every directory named ``top`` below a hierarchy root (v1 and the hybrid cgroup2)."""
    found = []
    for hierarchy in os.listdir(CGROUP_ROOT):
        candidate = os.path.join(CGROUP_ROOT, hierarchy, top)
        if os.path.isdir(candidate):
            found.append(candidate)
    return found


def sweep(top: str) -> list[str]:
    """Removes what a failed test left under ``top`` (deepest first); returns what it found."""
    found = leftovers(top)
    for directory in found:
        for dirpath, _, _ in sorted(os.walk(directory), key=lambda w: -w[0].count("/")):
            with suppress(OSError):
                os.rmdir(dirpath)
    return found


@contextmanager
def parked(script: str) -> Iterator[subprocess.Popen[str]]:
    """A shell that waits for a line on stdin before running ``script`` (so that the test can
    move it into a cgroup first); killed and reaped on the way out."""
    proc = subprocess.Popen(["/bin/sh", "-c", f"read _go; {script}"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def go(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """Releases a parked shell and returns its output once it exits."""
    out, _ = proc.communicate("go\n", timeout=timeout)
    return out
