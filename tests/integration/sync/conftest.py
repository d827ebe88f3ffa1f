"""Sync sessions against the real guest side (``python -m pydeskd.syncd``) as a local process.

The "guest" is a temp directory on this machine: everything but the SSH hop is real (framing,
inotify, watchdog, atomic applies, the agreed state on disk). The SSH transport is tested in the
vm tier (tests/vm/test_sync.py).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pydesk.sync.manager import SyncManager
from pydesk.sync.transport import local_factory


@dataclass
class SyncSetup:
    host: Path
    guest_base: Path
    state: Path
    reports: list[tuple[str, str]]
    managers: list[SyncManager]

    def manager(self) -> SyncManager:
        m = SyncManager(local_factory(sys.executable), self.state,
                        lambda message, error: self.reports.append((message, error)),
                        guest_base=str(self.guest_base), first_sync_timeout=120)
        self.managers.append(m)
        return m


@pytest.fixture
def sync(tmp_path: Path) -> Iterator[SyncSetup]:
    setup = SyncSetup(tmp_path / "host", tmp_path / "guest", tmp_path / "state", [], [])
    setup.host.mkdir()
    try:
        yield setup
    finally:
        for m in setup.managers:
            m.close()


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a sync must preserve: kind, mode, content or link target, file mtimes.
    A tree changing under the walk gives a marker entry (never equal to a real tree)."""
    try:
        return _tree(root)
    except FileNotFoundError as e:
        return {"<changed during the walk>": (str(e),)}


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = full.lstat()
            if full.is_symlink():
                out[rel] = ("l", os.readlink(full))
            elif full.is_dir():
                out[rel] = ("d", st.st_mode & 0o7777)
            else:
                out[rel] = ("f", st.st_mode & 0o7777, st.st_mtime_ns, full.read_bytes())
    return out


def eventually(check: Callable[[], bool], timeout: float = 1.0, what: str = "") -> float:
    """Polls ``check`` until true; returns the seconds it took; fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.005)
    return time.monotonic() - start
