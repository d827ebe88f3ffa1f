"""The overlayfs snapshotter: containerd's ``plugins/snapshots/overlay`` model, in Python.

Layout under ``root``::

    metadata.db                 sqlite3: keys, kinds, parents, labels, ids (``metadata``)
    snapshots/<id>/fs           the snapshot's own layer (an overlay upperdir, or a lowerdir)
    snapshots/<id>/work         overlayfs' workdir (ACTIVE snapshots only)
    snapshots/new-*, rm-*       a create in progress, a removal in progress (debris after a crash)

Mounts, as containerd returns them: an ACTIVE snapshot without parent is a read-write bind of
its ``fs``; a VIEW of one committed layer is a read-only bind of that layer's ``fs``; anything
else is ``overlay`` with ``lowerdir=`` (nearest parent first), plus ``upperdir=`` and
``workdir=`` for ACTIVE (a VIEW has ``lowerdir`` only, and at least two of them, which overlay
requires without an upperdir).

Crash safety: a create makes ``new-*`` and renames it to ``<id>`` *inside* the transaction that
inserts the row (a crash before the commit leaves an id the database does not know); a remove
deletes the row first, then renames the directory to ``rm-*``, then deletes it. ``cleanup``
removes every directory the database does not know, under the database's write lock, so it never
races a create.

Long chains: the mount data of an overlay is limited to one page (4096 bytes). The snapshotter
returns the full option list anyway; ``mount.perform`` passes long lowerdir lists one by one
through the new mount API (``fsconfig lowerdir+``, Linux 6.8+) and raises a clear error where that
is not available.

What it must never do: mount anything (callers perform the returned mounts), modify a committed
snapshot's files, or delete a directory the database still names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument
from pydeskd.containerd.snapshots import Info, Kind, Mount, Usage
from pydeskd.containerd.snapshots.metadata import Row, Store
from pydeskd.containerd.snapshots.removal import remove_path
from pydeskd.containerd.snapshots.walk import stats_below

log = logging.getLogger(__name__)


def disk_usage(path: Path) -> Usage:
    """Bytes (allocated blocks, as containerd's ``fs.DiskUsage``) and inodes below ``path``."""
    seen: set[tuple[int, int]] = set()
    size = 0
    with contextlib.suppress(FileNotFoundError):
        # fd-relative and iterative: a snapshot may be deeper than PATH_MAX or the recursion limit
        for st in stats_below(path):
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_blocks * 512
    return Usage(size, len(seen))


@dataclass(frozen=True)
class _Filter:
    field: str  # "name", "parent", "kind", "label"
    key: str
    value: str | None

    @classmethod
    def parse(cls, text: str) -> _Filter:
        lhs, sep, rhs = text.partition("==")
        if lhs in ("name", "parent", "kind") and sep:
            if lhs == "kind" and rhs not in {k.value for k in Kind}:
                raise InvalidArgument(f"unknown snapshot kind in filter {text!r}")
            return cls(lhs, "", rhs)
        if lhs.startswith("labels.") and len(lhs) > len("labels."):
            return cls("label", lhs[len("labels."):], rhs if sep else None)
        raise InvalidArgument(f"unsupported snapshot filter {text!r}")

    def matches(self, info: Info) -> bool:
        if self.field == "name":
            return info.name == self.value
        if self.field == "parent":
            return info.parent == self.value
        if self.field == "kind":
            return info.kind.value == self.value
        if self.value is None:
            return self.key in info.labels
        return info.labels.get(self.key) == self.value


class OverlaySnapshotter:
    """``Snapshotter`` on overlayfs, rooted at ``root`` (created if missing, mode 0700)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._snapshots = self.root / "snapshots"
        self._snapshots.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._db = Store(self.root / "metadata.db")

    # --- paths and mounts ---------------------------------------------------------------------

    def _dir(self, snapshot_id: int) -> Path:
        return self._snapshots / str(snapshot_id)

    def _mounts(self, chain: list[Row]) -> list[Mount]:
        own, parents = chain[0], chain[1:]
        own_dir = self._dir(own.id)
        if not parents:
            mode = "ro" if own.info.kind is Kind.VIEW else "rw"
            return [Mount("bind", str(own_dir / "fs"), options=(mode, "rbind"))]
        lower = ":".join(str(self._dir(p.id) / "fs") for p in parents)
        if own.info.kind is Kind.ACTIVE:
            return [Mount("overlay", "overlay", options=(f"workdir={own_dir / 'work'}",
                                                 f"upperdir={own_dir / 'fs'}",
                                                 f"lowerdir={lower}"))]
        if len(parents) == 1:
            parent_fs = str(self._dir(parents[0].id) / "fs")
            return [Mount("bind", parent_fs, options=("ro", "rbind"))]
        return [Mount("overlay", "overlay", options=(f"lowerdir={lower}",))]

    @staticmethod
    def _discard(path: Path) -> None:
        """Delete a directory already out of the database's view; a failure is only logged.

        The snapshot is gone either way (its row is, or never was, there): what could not be
        deleted is an ``rm-*`` (or ``new-*``) leftover that ``cleanup`` tries again.
        """
        try:
            remove_path(path)
        except OSError:
            log.exception("could not remove %s; cleanup will try again", path)

    def _trash(self, path: Path) -> Path:
        """Rename ``path`` out of the way (atomic); the caller deletes the returned path."""
        trash = self._snapshots / f"rm-{path.name}-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)
        return trash

    # --- the Snapshotter interface -----------------------------------------------------------

    def stat(self, key: str) -> Info:
        with self._db.read() as tx:
            return tx.get(key).info

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        for path in fieldpaths:
            if path != "labels" and not (path.startswith("labels.") and len(path) > 7):
                raise InvalidArgument(f"cannot update field {path!r} of a snapshot")
        with self._db.write() as tx:
            current = tx.get(info.name)
            if not fieldpaths or "labels" in fieldpaths:
                labels = dict(info.labels)
            else:
                labels = dict(current.info.labels)
                for path in fieldpaths:
                    key = path[len("labels."):]
                    if key in info.labels:
                        labels[key] = info.labels[key]
                    else:
                        labels.pop(key, None)
            return tx.set_labels(info.name, labels).info

    def usage(self, key: str) -> Usage:
        with self._db.read() as tx:
            row = tx.get(key)
        if row.info.kind is Kind.ACTIVE:
            return disk_usage(self._dir(row.id) / "fs")
        return row.usage

    def mounts(self, key: str) -> list[Mount]:
        with self._db.read() as tx:
            chain = tx.chain(key)
        if chain[0].info.kind is Kind.COMMITTED:
            raise FailedPrecondition(f"snapshot {key!r} is committed: it has no mounts")
        return self._mounts(chain)

    def prepare(self, key: str, parent: str = "",
                labels: Mapping[str, str] | None = None) -> list[Mount]:
        return self._create(Kind.ACTIVE, key, parent, labels or {})

    def view(self, key: str, parent: str = "",
             labels: Mapping[str, str] | None = None) -> list[Mount]:
        return self._create(Kind.VIEW, key, parent, labels or {})

    def _create(self, kind: Kind, key: str, parent: str,
                labels: Mapping[str, str]) -> list[Mount]:
        final: Path | None = None
        tmp: Path | None = None
        try:
            with self._db.write() as tx:
                row = tx.create(key, parent, kind, labels)
                tmp = Path(tempfile.mkdtemp(prefix="new-", dir=self._snapshots))
                (tmp / "fs").mkdir()
                os.chmod(tmp / "fs", 0o755)
                if kind is Kind.ACTIVE:
                    (tmp / "work").mkdir(mode=0o700)
                final = self._dir(row.id)
                if final.exists():  # debris of a create that crashed with the same id
                    self._discard(self._trash(final))
                os.rename(tmp, final)
                tmp = None
                chain = tx.chain(key)
        except BaseException:
            if tmp is not None:
                self._discard(tmp)
            if final is not None and tmp is None and final.exists():
                # Renamed, then the transaction failed (rolled back): the row is not there.
                with self._db.read() as tx:
                    if tx.find(key) is None:
                        self._discard(self._trash(final))
            raise
        return self._mounts(chain)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        with self._db.read() as tx:
            row = tx.get(key)
        used = disk_usage(self._dir(row.id) / "fs") if row.info.kind is Kind.ACTIVE \
            else Usage(0, 0)
        with self._db.write() as tx:
            tx.commit(name, key, labels, used)

    def remove(self, key: str) -> None:
        with self._db.write() as tx:
            row = tx.remove(key)
        directory = self._dir(row.id)
        if directory.exists():
            self._discard(self._trash(directory))

    def walk(self, fn: Callable[[Info], None], filters: Sequence[str] = ()) -> None:
        parsed = [_Filter.parse(f) for f in filters]
        with self._db.read() as tx:
            rows = tx.all()
        for row in rows:
            if not parsed or any(f.matches(row.info) for f in parsed):
                fn(row.info)

    def cleanup(self) -> None:
        doomed: list[Path] = []
        with self._db.write() as tx:  # the write lock: no create renames a directory meanwhile
            known = tx.ids()
            for entry in os.scandir(self._snapshots):
                if entry.name.isdigit() and int(entry.name) in known:
                    continue
                path = Path(entry.path)
                try:
                    doomed.append(path if entry.name.startswith("rm-") else self._trash(path))
                except OSError:
                    log.exception("cleanup: could not move %s aside; left as it is", path)
        for path in doomed:
            # One leftover that cannot be removed must not stop the rest (nor the service,
            # whose start-up runs this): it stays for the next cleanup, and is logged.
            try:
                remove_path(path)
            except Exception:
                log.exception("cleanup: could not remove %s; left for the next cleanup", path)
