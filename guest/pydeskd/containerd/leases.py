"""Leases: named, expiring claims that keep content and snapshots safe from garbage collection.

What it is for (containerd's ``core/leases``): work that writes blobs and snapshots before any
image record points at them -- a pull, a load, an import, an unpack -- first creates a lease,
adds every blob digest / snapshot key / ingest ref it writes to it, creates the image record,
and only then deletes the lease. GC treats every resource of a live lease as a root, so a
half-finished pull is never collected, and a crashed one is collected once its lease expires.

Resources are ``(kind, key)`` pairs. Kinds pydesk uses: ``content`` (a digest), ``ingests``
(an ingest ref) and ``snapshots/<snapshotter>`` (a snapshot key, e.g. ``snapshots/overlayfs``).

Leases live in sqlite3 (``root/leases.db``), one transaction per change, so they survive a
daemon crash. An expired lease protects nothing; ``delete_expired`` (GC calls it) drops them.

What it must never do: delete or touch the resources themselves (GC does, after marking).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydeskd.containerd.errors import AlreadyExists, InvalidArgument, NotFound

KIND_CONTENT = "content"
KIND_INGESTS = "ingests"
KIND_SNAPSHOTS_PREFIX = "snapshots/"
# How long a lease lives when its creator does not say: long enough for a slow pull.
DEFAULT_EXPIRY = 24 * 3600.0


def snapshot_kind(snapshotter: str = "overlayfs") -> str:
    return KIND_SNAPSHOTS_PREFIX + snapshotter


@dataclass(frozen=True)
class Resource:
    kind: str
    key: str


@dataclass(frozen=True)
class Lease:
    id: str
    created_at: float
    expires_at: float | None
    labels: Mapping[str, str] = field(default_factory=dict)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or time.time())


def _check_resource(kind: str, key: str) -> None:
    if kind not in (KIND_CONTENT, KIND_INGESTS) and not (
            kind.startswith(KIND_SNAPSHOTS_PREFIX) and len(kind) > len(KIND_SNAPSHOTS_PREFIX)):
        raise InvalidArgument(f"unsupported lease resource kind {kind!r}")
    if not key:
        raise InvalidArgument("empty lease resource key")


class LeaseManager:
    """Leases under ``root`` (see the module docstring). Thread-safe."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(root / "leases.db", isolation_level=None,
                                   check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY,"
                             " created_at REAL NOT NULL, expires_at REAL, labels TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS resources (lease TEXT NOT NULL REFERENCES leases(id)"
                " ON DELETE CASCADE, kind TEXT NOT NULL, key TEXT NOT NULL,"
                " PRIMARY KEY (lease, kind, key))")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def create(self, lease_id: str | None = None, expires_at: float | None = None,
               labels: Mapping[str, str] | None = None) -> Lease:
        """A new lease (a random id if none given). ``expires_at`` defaults to a day from now;
        pass ``float('inf')`` for none. Raises AlreadyExists."""
        lease_id = lease_id or f"pydesk-{uuid.uuid4().hex}"
        now = time.time()
        if expires_at is None:
            expires_at = now + DEFAULT_EXPIRY
        lease = Lease(lease_id, now, None if expires_at == float("inf") else expires_at,
                      dict(labels or {}))
        with self._tx() as db:
            try:
                db.execute("INSERT INTO leases VALUES (?, ?, ?, ?)",
                           (lease.id, lease.created_at, lease.expires_at,
                            json.dumps(dict(lease.labels))))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"lease {lease_id!r}: already exists") from None
        return lease

    def get(self, lease_id: str) -> Lease:
        with self._lock:
            row = self._db.execute("SELECT id, created_at, expires_at, labels FROM leases"
                                   " WHERE id=?", (lease_id,)).fetchone()
        if row is None:
            raise NotFound(f"lease {lease_id!r}: not found")
        return Lease(row[0], row[1], row[2], json.loads(row[3]))

    def delete(self, lease_id: str) -> None:
        """Drop a lease and its resources (not the resources' objects). Raises NotFound."""
        with self._tx() as db:
            if db.execute("DELETE FROM leases WHERE id=?", (lease_id,)).rowcount == 0:
                raise NotFound(f"lease {lease_id!r}: not found")

    def add_resource(self, lease_id: str, kind: str, key: str) -> None:
        """Raises NotFound (no such lease), InvalidArgument (unknown kind)."""
        _check_resource(kind, key)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM leases WHERE id=?", (lease_id,)).fetchone() is None:
                raise NotFound(f"lease {lease_id!r}: not found")
            db.execute("INSERT OR IGNORE INTO resources VALUES (?, ?, ?)", (lease_id, kind, key))

    def delete_resource(self, lease_id: str, kind: str, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM resources WHERE lease=? AND kind=? AND key=?",
                       (lease_id, kind, key))

    def resources(self, lease_id: str) -> list[Resource]:
        with self._lock:
            rows = self._db.execute("SELECT kind, key FROM resources WHERE lease=?"
                                    " ORDER BY kind, key", (lease_id,)).fetchall()
        return [Resource(k, v) for k, v in rows]

    def live_resources(self, now: float | None = None) -> set[Resource]:
        """The resources of every lease that has not expired: GC's lease roots."""
        now = now or time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT r.kind, r.key FROM resources r JOIN leases l ON r.lease = l.id"
                " WHERE l.expires_at IS NULL OR l.expires_at > ?", (now,)).fetchall()
        return {Resource(k, v) for k, v in rows}

    def delete_expired(self, now: float | None = None) -> list[str]:
        """Drop expired leases; returns their ids."""
        now = now or time.time()
        with self._tx() as db:
            rows = db.execute("SELECT id FROM leases WHERE expires_at IS NOT NULL"
                              " AND expires_at <= ?", (now,)).fetchall()
            db.execute("DELETE FROM leases WHERE expires_at IS NOT NULL AND expires_at <= ?",
                       (now,))
        return [r[0] for r in rows]

    @contextlib.contextmanager
    def hold(self, expires_in: float = DEFAULT_EXPIRY,
             labels: Mapping[str, str] | None = None) -> Iterator[Lease]:
        """A lease for the duration of a ``with`` block, deleted at its end (even on error:
        what the block wrote and no image references becomes collectable)."""
        lease = self.create(expires_at=time.time() + expires_in, labels=labels)
        try:
            yield lease
        finally:
            with contextlib.suppress(NotFound):
                self.delete(lease.id)

    def list(self) -> list[Lease]:
        """Every lease, expired ones included, by id."""
        with self._lock:
            rows = self._db.execute("SELECT id, created_at, expires_at, labels FROM leases"
                                    " ORDER BY id").fetchall()
        return [Lease(r[0], r[1], r[2], json.loads(r[3])) for r in rows]
