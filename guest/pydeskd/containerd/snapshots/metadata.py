"""The snapshotter's metadata: one sqlite3 database, every change in one transaction.

What it is for: the source of truth for which snapshots exist, their kind, parent, labels, times,
and the numeric id that names each one's directory. The directories follow the database, never
the other way round (``overlay`` renames a directory into place inside the transaction that
creates its row, and removes rows before directories), so ``cleanup`` can always tell debris from
data by asking this database.

Concurrency: a connection per transaction, ``BEGIN IMMEDIATE`` (one writer at a time, across
threads and processes), a generous busy timeout, WAL journal. Rows are never edited in place by
callers: ``Store`` methods take and return ``Info``.

What it must never do: hold a transaction across anything slow that is not part of the change
(unpacking, du), or reuse an id (``AUTOINCREMENT``: a removed snapshot's directory name is never
given to a new one).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from pydeskd.containerd.snapshots import Info, Kind, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    parent TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
"""
_MAX_LABEL_SIZE = 4096
_MAX_KEY = 4096


def validate_key(key: str, what: str = "key") -> str:
    if not key or len(key) > _MAX_KEY or "\0" in key:
        raise InvalidArgument(f"invalid snapshot {what} {key!r}")
    return key


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidArgument(f"invalid label {key!r}")
        if len(key.encode()) + len(value.encode()) > _MAX_LABEL_SIZE:
            raise InvalidArgument(f"label {key!r} is larger than {_MAX_LABEL_SIZE} bytes")
    return dict(labels)


@dataclass(frozen=True)
class Row:
    """A snapshot as stored: its ``Info`` plus the directory id and the recorded usage."""

    id: int
    info: Info
    usage: Usage


def _row(r: sqlite3.Row) -> Row:
    info = Info(r["key"], r["parent"], Kind(r["kind"]), json.loads(r["labels"]),
                r["created_at"], r["updated_at"])
    return Row(r["id"], info, Usage(r["size"], r["inodes"]))


class Transaction:
    """One open write (or read) transaction; the methods raise the errors the API names."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> Row:
        r = self._conn.execute("SELECT * FROM snapshots WHERE key = ?", (key,)).fetchone()
        if r is None:
            raise NotFound(f"snapshot {key!r}: not found")
        return _row(r)

    def find(self, key: str) -> Row | None:
        r = self._conn.execute("SELECT * FROM snapshots WHERE key = ?", (key,)).fetchone()
        return None if r is None else _row(r)

    def chain(self, key: str) -> list[Row]:
        """``key`` and its ancestors, nearest first."""
        rows = [self.get(key)]
        while rows[-1].info.parent:
            rows.append(self.get(rows[-1].info.parent))
        return rows

    def create(self, key: str, parent: str, kind: Kind, labels: Mapping[str, str]) -> Row:
        validate_key(key)
        labels = validate_labels(labels)
        if self.find(key) is not None:
            raise AlreadyExists(f"snapshot {key!r}: already exists")
        if parent:
            prow = self.get(parent)
            if prow.info.kind is not Kind.COMMITTED:
                raise FailedPrecondition(f"parent {parent!r} is not committed")
        now = time.time()
        cur = self._conn.execute(
            "INSERT INTO snapshots (key, parent, kind, labels, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, parent, kind.value, json.dumps(labels, sort_keys=True), now, now))
        assert cur.lastrowid is not None
        return self.get(key)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None,
               usage: Usage) -> Row:
        validate_key(name, "name")
        row = self.get(key)
        if row.info.kind is not Kind.ACTIVE:
            raise FailedPrecondition(f"snapshot {key!r} is {row.info.kind.value}, not active")
        if self.find(name) is not None:
            raise AlreadyExists(f"snapshot {name!r}: already exists")
        new_labels = validate_labels(labels) if labels is not None else dict(row.info.labels)
        self._conn.execute(
            "UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated_at = ?, size = ?,"
            " inodes = ? WHERE id = ?",
            (name, Kind.COMMITTED.value, json.dumps(new_labels, sort_keys=True), time.time(),
             usage.size, usage.inodes, row.id))
        return self.get(name)

    def remove(self, key: str) -> Row:
        row = self.get(key)
        child = self._conn.execute("SELECT key FROM snapshots WHERE parent = ? LIMIT 1",
                                   (key,)).fetchone()
        if child is not None:
            raise FailedPrecondition(
                f"snapshot {key!r} has children (e.g. {child['key']!r}): cannot remove")
        self._conn.execute("DELETE FROM snapshots WHERE id = ?", (row.id,))
        return row

    def set_labels(self, key: str, labels: Mapping[str, str]) -> Row:
        labels = validate_labels(labels)
        self._conn.execute("UPDATE snapshots SET labels = ?, updated_at = ? WHERE key = ?",
                           (json.dumps(labels, sort_keys=True), time.time(), key))
        return self.get(key)

    def all(self) -> list[Row]:
        return [_row(r) for r in self._conn.execute("SELECT * FROM snapshots ORDER BY id")]

    def ids(self) -> set[int]:
        return {int(r["id"]) for r in self._conn.execute("SELECT id FROM snapshots")}


class Store:
    """The database file ``root/metadata.db``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Transaction]:
        """A write transaction: committed if the block returns, rolled back if it raises."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[Transaction]:
        """A consistent read (a deferred transaction: readers never wait for the writer)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            try:
                yield Transaction(conn)
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()
