"""Bind sources -> synced guest copies: one session per host root, made on first use.

What it is for: the API proxy calls :meth:`SyncManager.guest_path` for the source of each bind
mount; the manager starts (or reuses) the session for that root, blocks until the first full sync
is done (or, for a root already synced, until the path has reached the guest), and returns the
path of the copy in the guest: ``<guest base>/<sha256(root)[:16]>/<rest of the path>``. A single
file is synced as its directory with only that name included, in place (a container's file bind
keeps its inode). ``status()`` feeds ``pydesk doctor``.
What it must never do: sync a path that does not exist (the caller says so to the user), or keep
a failed session: the next use starts it again, and the agreed state makes that cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydesk.sync.errors import HostPathNotFound, SyncError, UnsupportedPath
from pydesk.sync.ignore import IgnoreRules
from pydesk.sync.session import Session
from pydesk.sync.state import StateFile, last_used, read_root
from pydesk.sync.status import SessionStatus, State
from pydesk.sync.transport import TransportFactory
from pydeskd.vmcontract import DATA_MOUNT

log = logging.getLogger(__name__)

GUEST_SYNC_BASE = DATA_MOUNT + "/sync"
"""Guest copies live on the data disk: they survive guest restarts, so a restart re-sends only
what changed."""
GUEST_PYTHON = "/opt/pydesk/bin/python3"
"""The guest's interpreter with pydeskd importable (the image's venv)."""

RESUME_WITHIN_S = 30 * 86400
"""``resume`` restarts only roots used this recently (a container asked for them, or their sync
carried a change): a root synced once long ago is not followed forever."""

Report = Callable[[str, str], None]
"""``report(message, error)``: the agent writes it as a status line."""


def root_key(root: str, only: str | None = None) -> str:
    """The name of a root's guest copy and state file."""
    ident = root if only is None else f"file:{root}/{only}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


class SyncManager:
    def __init__(self, transport_factory: TransportFactory, state_dir: Path,
                 report: Report | None = None, *, guest_base: str = GUEST_SYNC_BASE,
                 guest_python: str = GUEST_PYTHON, first_sync_timeout: float = 900.0,
                 retry_interval: float = 5.0) -> None:
        self.factory = transport_factory
        self.state_dir = Path(state_dir)
        self.report = report or (lambda message, error: None)
        self.guest_base = guest_base.rstrip("/")
        self.guest_python = guest_python
        self.first_sync_timeout = first_sync_timeout
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str | None], Session] = {}
        self._closed = False
        self._stop = threading.Event()
        # A session that failed (SSH connection lost, guest restarted) is started again in the
        # background: containers already using its guest copy must keep following the host.
        self._supervisor = threading.Thread(target=self._supervise, args=(retry_interval,),
                                            daemon=True, name="sync-supervisor")
        self._supervisor.start()

    def _supervise(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.restart_failed()
            except Exception as e:  # the supervisor must outlive one bad restart
                log.warning("sync: restarting failed sessions: %s", e)

    def guest_path(self, host_path: str) -> str:
        """The guest path of ``host_path``'s synced copy, once it is there.

        Raises HostPathNotFound (missing), UnsupportedPath (not a file or directory),
        SessionFailed (the guest side failed or the first sync timed out)."""
        real = os.path.realpath(host_path)
        try:
            mode = os.stat(real).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise HostPathNotFound(f"bind source path does not exist: {host_path}") from None
        except PermissionError as e:
            raise UnsupportedPath(f"bind source path {host_path} is not readable: {e}") from e
        with self._lock:
            if self._closed:
                raise SyncError("sync is shutting down")
            session, rel, fresh = self._session_for(real, mode)
        session.statefile.mark_used()
        if fresh:
            try:
                session.wait_ready(self.first_sync_timeout)
            except SyncError as e:
                self.report(f"sync of {session.host_root} failed", e.message)
                raise
            self.report(f"synced {session.host_root} to the guest "
                        f"({session.status().entries} entries, "
                        f"{session.first_sync_s:.1f} s)", "")
        else:
            session.wait_ready(self.first_sync_timeout)
            session.flush(rel)
        return session.guest_root + (f"/{rel}" if rel else "")

    def _session_for(self, real: str, mode: int) -> tuple[Session, str, bool]:
        for (root, only), session in self._sessions.items():
            if only is not None:
                if real == f"{root}/{only}" and session.state is not State.FAILED:
                    return session, only, False
                continue
            if session.state is State.FAILED:
                continue
            if real == root:
                return session, "", False
            if real.startswith(root.rstrip("/") + "/"):
                return session, os.path.relpath(real, root).replace(os.sep, "/"), False
        if stat.S_ISDIR(mode):
            key: tuple[str, str | None] = (real, None)
            rel = ""
        elif stat.S_ISREG(mode):
            key = (os.path.dirname(real), os.path.basename(real))
            rel = os.path.basename(real)
        else:
            raise UnsupportedPath(f"bind source {real} is neither a directory nor a file")
        old = self._sessions.pop(key, None)
        if old is not None:
            self.report(f"restarting the sync of {real}", old.error)
            old.close()
        session = self._new_session(*key)
        self._sessions[key] = session
        session.start()
        return session, rel, True

    def _new_session(self, root: str, only: str | None) -> Session:
        key = root_key(root, only)
        guest_root = f"{self.guest_base}/{key}"
        return Session(Path(root), guest_root, self.factory,
                       guest_argv=[self.guest_python, "-m", "pydeskd.syncd", guest_root],
                       state=StateFile(self.state_dir / f"{key}.json", root, only),
                       rules=IgnoreRules.load(Path(root), only), inplace=only is not None,
                       report=self.report)

    def resume(self) -> int:
        """Starts (without waiting) the sessions of every root a previous agent synced that
        still exists and was used in the last ``RESUME_WITHIN_S``: the containers using their
        guest copies keep following the host. Returns how many were started."""
        started = 0
        oldest = time.time() - RESUME_WITHIN_S
        for path in sorted(self.state_dir.glob("*.json")):
            found = read_root(path)
            if found is None or last_used(path) < oldest:
                continue
            root, only = found
            full = root if only is None else os.path.join(root, only)
            if not os.path.exists(full):
                continue
            with self._lock:
                if self._closed or (root, only) in self._sessions:
                    continue
                session = self._new_session(root, only)
                self._sessions[(root, only)] = session
                session.start()
                started += 1
        return started

    def restart_failed(self) -> int:
        """Starts again every failed session (the agent calls it periodically, e.g. after its
        SSH connection came back); each resumes from its agreed state. Returns how many."""
        with self._lock:
            if self._closed:
                return 0
            failed = [(key, s) for key, s in self._sessions.items() if s.state is State.FAILED]
            for key, old in failed:
                self.report(f"restarting the sync of {old.host_root}", old.error)
                old.close()
                self._sessions[key] = self._new_session(*key)
                self._sessions[key].start()
        return len(failed)

    def status(self) -> list[SessionStatus]:
        with self._lock:
            return [s.status() for s in self._sessions.values()]

    def close(self) -> None:
        """Stops every session (their agreed state is saved; the guest copies stay)."""
        self._stop.set()
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.close()
