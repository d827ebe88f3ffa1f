"""Bind sources -> synced guest copies: one session per host root, made on first use.

What it is for: the API proxy calls :meth:`SyncManager.guest_path` for the source of each bind
mount; the manager starts (or reuses) the session for that root, blocks until the first full sync
is done (or, for a root already synced, until the path has reached the guest), and returns the
path of the copy in the guest: ``<guest base>/<sha256(root)[:16]>/<rest of the path>``.
- A directory inside a synced root reuses that root's session, unless the root's rules ignore
  it (``.git``, a ``.pydeskignore`` line): then it is a root of its own.
- A single file always has its own session, even inside a synced directory: its directory
  synced with only that name included, written in place (a container's file bind keeps its
  inode, so it must see every update in that inode).
- pydesk's own directory (``$PYDESK_HOME``, else ``~/.pydesk``: VM disks, keys, this state) is
  never synced: a root holding it leaves it out, a bind inside it is refused.
``status()`` feeds ``pydesk doctor``.
What it must never do: sync a path that does not exist (the caller says so to the user, or asks
for it to be created, as Docker does for ``-v``), or keep a failed session: the next use starts
it again, and the agreed state makes that cheap.
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

from pydesk.sync.errors import HostPathNotFound, ProtectedPath, SyncError, UnsupportedPath
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


def default_home() -> Path:
    """``$PYDESK_HOME``, else ``~/.pydesk`` (as ``pydesk.vm.instance.pydesk_home``)."""
    override = os.environ.get("PYDESK_HOME")
    return Path(override) if override else Path.home() / ".pydesk"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def root_key(root: str, only: str | None = None) -> str:
    """The name of a root's guest copy and state file."""
    ident = root if only is None else f"file:{root}/{only}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


class SyncManager:
    def __init__(self, transport_factory: TransportFactory, state_dir: Path,
                 report: Report | None = None, *, guest_base: str = GUEST_SYNC_BASE,
                 guest_python: str = GUEST_PYTHON, first_sync_timeout: float = 900.0,
                 retry_interval: float = 5.0, pydesk_home: Path | None = None) -> None:
        self.factory = transport_factory
        self.state_dir = Path(state_dir)
        # Never synced: pydesk's own files (VM disks, SSH keys, the agreed states).
        self.protected = tuple(dict.fromkeys(
            os.path.realpath(p) for p in (pydesk_home or default_home(), self.state_dir)))
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

    def guest_path(self, host_path: str, *, create: bool = False) -> str:
        """The guest path of ``host_path``'s synced copy, once it is there. ``create``: a
        missing path is made as a directory first (with the user's umask), as Docker does for
        a ``-v`` source and for a mount with ``BindOptions.CreateMountpoint``.

        Raises HostPathNotFound (missing, and not ``create``), UnsupportedPath (not a file or
        directory, unreadable, or cannot be created), ProtectedPath (inside pydesk's own
        directory), SessionFailed (the guest side failed or the first sync timed out)."""
        real = self._check_protected(host_path)
        try:
            mode = os.stat(real).st_mode
        except (FileNotFoundError, NotADirectoryError):
            if not create:
                raise HostPathNotFound(f"bind source path does not exist: {host_path}") from None
            mode = self._create(host_path)
            real = self._check_protected(host_path)
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

    def _check_protected(self, host_path: str) -> str:
        real = os.path.realpath(host_path)
        for home in self.protected:
            if _inside(real, home):
                raise ProtectedPath(f"bind source {host_path} is inside pydesk's own directory "
                                    f"{home}, which is never synced to the VM",
                                    hint="bind another directory")
        return real

    def _create(self, host_path: str) -> int:
        try:
            # 0o777 masked by the umask, as Docker's MkdirAll of a -v source gives 0755 under 022.
            os.makedirs(host_path, mode=0o777, exist_ok=True)
            return os.stat(host_path).st_mode
        except OSError as e:
            raise UnsupportedPath(f"cannot create bind source path {host_path}: "
                                  f"{e.strerror or e}") from e

    def _session_for(self, real: str, mode: int) -> tuple[Session, str, bool]:
        if stat.S_ISREG(mode):
            # A file bind is its own in-place session even inside a synced directory: the
            # directory's session replaces files by rename, which a bound inode never sees.
            key: tuple[str, str | None] = (os.path.dirname(real), os.path.basename(real))
            rel = os.path.basename(real)
            same = self._sessions.get(key)
            if same is not None and same.state is not State.FAILED:
                return same, rel, False
        elif stat.S_ISDIR(mode):
            found = self._enclosing(real)
            if found is not None:
                return found[0], found[1], False
            key, rel = (real, None), ""
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

    def _enclosing(self, real: str) -> tuple[Session, str] | None:
        """The live directory session whose copy holds ``real`` (the innermost), with the
        relative path; None when none does, or each one's rules ignore the path (it was never
        copied: it gets a session of its own)."""
        best: tuple[Session, str] | None = None
        for (root, only), session in self._sessions.items():
            if only is not None or session.state is State.FAILED or not _inside(real, root):
                continue
            rel = "" if real == root else os.path.relpath(real, root).replace(os.sep, "/")
            if rel and session.rules.ignored(rel, True):
                continue
            if best is None or len(root) > len(best[0].host_root):
                best = session, rel
        return best

    def _new_session(self, root: str, only: str | None) -> Session:
        key = root_key(root, only)
        guest_root = f"{self.guest_base}/{key}"
        if only is None:
            inner = [os.path.relpath(p, root).replace(os.sep, "/") for p in self.protected
                     if _inside(p, root) and p != root]
            rules = IgnoreRules.load(Path(root)).excluding(tuple(inner))
        else:
            # The one file named, whatever its directory's .pydeskignore says (the user asked
            # for it), even a worktree's ".git" file.
            rules = IgnoreRules(only=only, pruned=())
        return Session(Path(root), guest_root, self.factory,
                       guest_argv=[self.guest_python, "-m", "pydeskd.syncd", guest_root],
                       state=StateFile(self.state_dir / f"{key}.json", root, only),
                       rules=rules, inplace=only is not None, report=self.report)

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
