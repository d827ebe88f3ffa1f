"""The container records on disk and in memory: lookup by ID, ID prefix or name; one lock each.

What it is for: ``<data-root>/containers/<id>/config.v2.json`` per container, written atomically
(temp + fsync + rename), and the in-memory tables the API resolves references with, by Docker's
rules: a full ID, then an exact name (``x`` or ``/x``), then a unique ID prefix. Names are
reserved here, so two creates with one name cannot both succeed. Each container has its own
re-entrant lock: state changes of one container are ordered, different containers go in
parallel. The table lock is held only for table changes, never while a container's lock is.

What it must never do: write a record anywhere but its own directory, or hand out a record
without going through the lookup rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path

from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.containerd.snapshots.removal import remove_path
from pydeskd.shim.paths import atomic_write

from .errors import Conflict
from .names import ID_PATTERN, validate_name
from .record import Container

CONFIG_FILE = "config.v2.json"
QUARANTINE = ".quarantine"
"""Where records that cannot be read are moved at start (``load``), for a human to look at."""

log = logging.getLogger(__name__)


class ContainerStore:
    def __init__(self, root: Path, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._by_id: dict[str, Container] = {}
        self._names: dict[str, str] = {}           # "/name" -> id
        self._locks: dict[str, threading.RLock] = {}

    # --- loading --------------------------------------------------------------------------

    def load(self) -> list[Container]:
        """Reads every record under the root. A directory without a record (a create that
        crashed before its first write, which is atomic) is removed; one whose record cannot
        be read (damaged, or written by a newer pydeskd) is moved aside to ``.quarantine/``
        with a warning, never deleted: it may be the only trace of a container's data."""
        loaded: list[Container] = []
        for entry in sorted(self.root.iterdir()):
            if not ID_PATTERN.match(entry.name) or not entry.is_dir():
                continue
            try:
                record = Container.from_json(json.loads((entry / CONFIG_FILE).read_text()))
            except FileNotFoundError:
                remove_tree(entry)
                continue
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
                self._quarantine(entry, e)
                continue
            with self._lock:
                self._by_id[record.id] = record
                self._names[record.name] = record.id
                self._locks.setdefault(record.id, threading.RLock())
            loaded.append(record)
        return loaded

    def _quarantine(self, entry: Path, error: Exception) -> None:
        aside = self.root / QUARANTINE / f"{entry.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            aside.parent.mkdir(exist_ok=True, mode=0o700)
            entry.rename(aside)
        except OSError as e:  # left where it is: skipped again at the next start
            log.warning("container %s: unreadable record (%s), cannot move it aside: %s",
                        entry.name, error, e)
            return
        log.warning("container %s: unreadable record (%s); moved to %s", entry.name, error,
                    aside)

    # --- paths ----------------------------------------------------------------------------

    def dir(self, cid: str) -> Path:
        return self.root / cid

    # --- changes --------------------------------------------------------------------------

    def reserve_name(self, name: str, cid: str) -> str:
        """Reserves ``name`` (stored form: ``/name``) for ``cid``.

        Raises Conflict (taken by another), InvalidArgument (not a valid name)."""
        stored = validate_name(name)
        with self._lock:
            owner = self._names.get(stored)
            if owner is not None and owner != cid:
                raise Conflict(f'Conflict. The container name "{stored}" is already in use by '
                               f'container "{owner}". You have to remove (or rename) that '
                               f'container to be able to reuse that name.')
            self._names[stored] = cid
        return stored

    def release_name(self, name: str, cid: str) -> None:
        with self._lock:
            if self._names.get(name) == cid:
                del self._names[name]

    def name_taken(self, name: str) -> bool:
        with self._lock:
            return validate_name(name) in self._names

    def add(self, record: Container) -> None:
        """Adds a new record (its name already reserved) and writes it."""
        self.dir(record.id).mkdir(parents=True, exist_ok=True)
        self.save(record)
        with self._lock:
            self._by_id[record.id] = record
            self._names[record.name] = record.id
            self._locks.setdefault(record.id, threading.RLock())

    def save(self, record: Container) -> None:
        atomic_write(self.dir(record.id) / CONFIG_FILE, record.to_json(), durable=self.durable)

    def rename(self, record: Container, new_name: str) -> None:
        old = record.name
        stored = self.reserve_name(new_name, record.id)
        record.name = stored
        try:
            self.save(record)
        except BaseException:
            record.name = old
            self.release_name(stored, record.id)
            raise
        self.release_name(old, record.id)

    def delete(self, record: Container) -> None:
        """Forgets the record and removes its directory."""
        with self._lock:
            self._by_id.pop(record.id, None)
            if self._names.get(record.name) == record.id:
                del self._names[record.name]
        remove_tree(self.dir(record.id))

    # --- lookup ---------------------------------------------------------------------------

    def lock(self, cid: str) -> threading.RLock:
        with self._lock:
            return self._locks.setdefault(cid, threading.RLock())

    def all(self) -> list[Container]:
        with self._lock:
            return list(self._by_id.values())

    def exists(self, cid: str) -> bool:
        with self._lock:
            return cid in self._by_id

    def get(self, ref: str) -> Container:
        """The container ``ref`` names. Raises NotFound ("No such container: ref"),
        InvalidArgument (an ID prefix matching several containers), as Docker."""
        if not ref:
            raise NotFound("No such container: ")
        with self._lock:
            found = self._by_id.get(ref)
            if found is not None:
                return found
            owner = self._names.get(ref if ref.startswith("/") else "/" + ref)
            if owner is not None and owner in self._by_id:
                return self._by_id[owner]
            if not ref.startswith("/"):
                matches = [c for cid, c in self._by_id.items() if cid.startswith(ref)]
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    raise InvalidArgument(
                        f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def find(self, ref: str) -> Container | None:
        with contextlib.suppress(NotFound):
            return self.get(ref)
        return None


def remove_tree(path: str | Path) -> None:
    """Best-effort removal of a directory tree of any depth (``shutil.rmtree`` recurses and
    raises RecursionError on a container that made a very deep tree); never crosses a mount
    point left below it. Errors are ignored, as ``rmtree(ignore_errors=True)`` did."""
    with contextlib.suppress(OSError, ValueError):
        remove_path(path)
