"""The content store: immutable blobs addressed by digest, written through resumable ingests.

What it is for: every manifest, config and layer pydesk pulls, loads or builds lands here exactly
once, under its ``sha256:`` digest, and is read back by digest. The interface is split the way
containerd's ``core/content/content.go`` splits it, so a caller asks only for what it uses:

- ``Provider``: open a blob for random-access reading (``reader_at``).
- ``Ingester``: open a ``Writer`` under a *ref*; an interrupted ingest resumes from its offset.
- ``Manager``: ``info``, ``update`` of labels by field path, ``walk`` with a filter, ``delete``.
- ``IngestManager``: ``status`` / ``list_statuses`` / ``abort`` of ingests in progress.

``FileStore`` implements all four under one root directory::

    root/blobs/sha256/<hex>          committed, read-only blobs
    root/meta/sha256/<hex>.json      labels and times of a blob (written atomically beside it)
    root/ingests/<sha256(ref)>/      data, ref, meta.json (expected total/digest), lock

What it must never do:

- make a blob visible before its size and digest are verified (``Writer.commit``), or leave a
  half-written file under ``blobs/`` (commit hard-links a fully written, fsynced file into place);
- replace or modify a committed blob (committing an existing digest raises ``AlreadyExists``);
- turn a digest or a ref into a path outside its directory (digests are validated against
  ``sha256:<64 lowercase hex>`` before any path is built; refs are hashed, never used as names).

Not in this slice: garbage collection. It needs the image store's roots (images, leases, snapshot
parents) to know what is referenced; it will walk ``Manager.walk`` and ``delete`` what no root
reaches. Other digest algorithms (sha512) are refused with ``InvalidArgument`` until needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_CHUNK = 1 << 20
# containerd's limits (core/content/content.go validation): a label key and value together stay
# small, because labels travel in every metadata response.
_MAX_LABEL_SIZE = 4096
_MAX_REF_LENGTH = 1024


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 lowercase hex>``; raise ``InvalidArgument`` if not.

    The only gate between a client-supplied string and a path under ``blobs/``: anything with a
    slash, ``..``, upper case or another algorithm is refused here.
    """
    if not isinstance(digest, str) or _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<64 lowercase hex>")
    return digest


def _validate_labels(labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        if not key or not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgument(f"invalid label {key!r}")
        if len(key.encode()) + len(value.encode()) > _MAX_LABEL_SIZE:
            raise InvalidArgument(f"label {key!r} is larger than {_MAX_LABEL_SIZE} bytes")


def _validate_ref(ref: str) -> None:
    if not ref or len(ref) > _MAX_REF_LENGTH or "\0" in ref:
        raise InvalidArgument(f"invalid ingest ref {ref!r}")


@dataclass(frozen=True)
class Info:
    """What the store knows about a committed blob."""

    digest: str
    size: int
    created_at: float
    updated_at: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    """Progress of one ingest: ``offset`` bytes written so far of ``total`` (0 = unknown)."""

    ref: str
    offset: int
    total: int
    expected: str | None
    started_at: float
    updated_at: float


class ReaderAt(Protocol):
    """Random access to one blob; close it (or use it as a context manager)."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, n: int) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Writer(Protocol):
    """An open ingest. ``close`` without ``commit`` keeps the data so the ref can resume."""

    @property
    def ref(self) -> str: ...

    def status(self) -> Status: ...

    def digest(self) -> str: ...

    def write(self, data: bytes) -> int: ...

    def commit(
        self, size: int, expected: str | None, labels: Mapping[str, str] | None = None
    ) -> Info: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Provider(Protocol):
    def reader_at(self, digest: str) -> ReaderAt:
        """Open a committed blob. Raises NotFound, InvalidArgument."""
        ...


class Ingester(Protocol):
    def writer(self, ref: str, total: int = 0, expected: str | None = None) -> Writer:
        """Open (or resume) the ingest ``ref``.

        Raises Unavailable if another writer holds ``ref``, AlreadyExists if ``expected`` is
        already committed, InvalidArgument for a bad ref or digest.
        """
        ...


class Manager(Protocol):
    def info(self, digest: str) -> Info:
        """Raises NotFound, InvalidArgument."""
        ...

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Replace labels (no field paths, or ``labels``) or set/remove ``labels.<key>``.

        Raises NotFound, InvalidArgument (unknown field path, bad label).
        """
        ...

    def walk(self, fn: Callable[[Info], None], filters: Sequence[str] = ()) -> None:
        """Call ``fn`` for each blob matching any filter (all blobs if none).

        Filters: ``labels.<key>`` (present), ``labels.<key>==<value>``, ``digest==<digest>``.
        Raises InvalidArgument for a filter it cannot parse.
        """
        ...

    def delete(self, digest: str) -> None:
        """Remove the blob and its labels. Raises NotFound, InvalidArgument."""
        ...


class IngestManager(Protocol):
    def status(self, ref: str) -> Status:
        """Raises NotFound."""
        ...

    def list_statuses(self, ref_prefix: str = "") -> list[Status]:
        """The ingests whose ref starts with ``ref_prefix``, sorted by ref."""
        ...

    def abort(self, ref: str) -> None:
        """Discard an ingest. Raises NotFound, Unavailable (a writer holds it)."""
        ...


class Store(Provider, Ingester, Manager, IngestManager, Protocol):
    """The whole content store, as the image store and the registry client use it."""


# --- the filesystem implementation ----------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, rename: a reader sees the old file or the new one, never a partial one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class _Filter:
    kind: str  # "label-present", "label-equals", "digest"
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> _Filter:
        lhs, sep, rhs = text.partition("==")
        if lhs == "digest" and sep:
            return cls("digest", "", validate_digest(rhs))
        if lhs.startswith("labels.") and len(lhs) > len("labels."):
            key = lhs[len("labels.") :]
            return cls("label-equals" if sep else "label-present", key, rhs)
        raise InvalidArgument(f"unsupported content filter {text!r}")

    def matches(self, info: Info) -> bool:
        if self.kind == "digest":
            return info.digest == self.value
        if self.kind == "label-present":
            return self.key in info.labels
        return info.labels.get(self.key) == self.value


class _FileReaderAt:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0:
            raise InvalidArgument("negative offset or length")
        return os.pread(self._fd, n, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _FileWriter:
    """Holds the ingest's flock for its lifetime: a second writer on the same ref, in this process
    or another, fails fast with Unavailable instead of interleaving bytes."""

    def __init__(self, store: FileStore, ref: str, directory: Path, lock_fd: int) -> None:
        self._store = store
        self._ref = ref
        self._dir = directory
        self._lock_fd = lock_fd
        meta = json.loads((directory / "meta.json").read_bytes())
        self._total: int = meta["total"]
        self._expected: str | None = meta["expected"]
        self._started_at: float = meta["started_at"]
        self._hash = hashlib.sha256()
        # Resume: the digest state is not saved, so re-read what is on disk. The file is opened
        # for append, so new bytes always follow what was hashed.
        self._file = open(directory / "data", "ab")  # noqa: SIM115 (closed in close())
        with open(directory / "data", "rb") as f:
            while chunk := f.read(_CHUNK):
                self._hash.update(chunk)
        self._offset = self._file.tell()
        self._updated_at = os.fstat(self._file.fileno()).st_mtime
        self._closed = False

    @property
    def ref(self) -> str:
        return self._ref

    def status(self) -> Status:
        return Status(
            self._ref, self._offset, self._total, self._expected, self._started_at, self._updated_at
        )

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def write(self, data: bytes) -> int:
        if self._closed:
            raise FailedPrecondition(f"writer for {self._ref!r} is closed")
        self._file.write(data)
        self._hash.update(data)
        self._offset += len(data)
        self._updated_at = time.time()
        return len(data)

    def commit(
        self, size: int, expected: str | None, labels: Mapping[str, str] | None = None
    ) -> Info:
        if self._closed:
            raise FailedPrecondition(f"writer for {self._ref!r} is closed")
        if expected is not None:
            validate_digest(expected)
        labels = dict(labels or {})
        _validate_labels(labels)
        self._file.flush()
        os.fsync(self._file.fileno())
        # As containerd: a mismatch is FailedPrecondition and the ingest stays on disk (closed and
        # unlocked) for the caller to inspect, resume or abort; nothing reaches blobs/.
        if size > 0 and size != self._offset:
            self.close()
            raise FailedPrecondition(
                f"unexpected commit size {self._offset}, expected {size} for ref {self._ref!r}"
            )
        actual = self.digest()
        if expected is not None and expected != actual:
            self.close()
            raise FailedPrecondition(
                f"unexpected commit digest {actual}, expected {expected} for ref {self._ref!r}"
            )
        data = self._dir / "data"
        os.chmod(data, 0o444)
        target = self._store._blob_path(actual)
        try:
            # link(2) fails if the target exists, so of two refs racing to the same digest exactly
            # one wins, and an existing blob is never replaced (rename would replace it).
            os.link(data, target)
        except FileExistsError:
            # Removed while still holding the lock: no other writer can resume this ingest.
            self._store._remove_ingest(self._dir)
            self.close()
            raise AlreadyExists(f"content {actual}: already exists") from None
        except BaseException:
            os.chmod(data, 0o644)  # left resumable: the writer appends to it
            self.close()
            raise
        _fsync_dir(target.parent)
        now = time.time()
        info = Info(actual, self._offset, now, now, labels)
        self._store._write_meta(info)
        # Removed before the lock is released: a writer opening the same ref right after must
        # start a new ingest, never append to what is now a committed (hard-linked) blob.
        self._store._remove_ingest(self._dir)
        self.close()
        return info

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._file.close()
        os.close(self._lock_fd)  # releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FileStore:
    """A content store under ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._meta = root / "meta" / "sha256"
        self._ingests = root / "ingests"
        for d in (self._blobs, self._meta, self._ingests):
            d.mkdir(parents=True, exist_ok=True)
        self._meta_lock = root / "meta.lock"

    # paths -- every path is built from a validated digest or a hash of a ref

    def _blob_path(self, digest: str) -> Path:
        return self._blobs / validate_digest(digest).removeprefix("sha256:")

    def _meta_path(self, digest: str) -> Path:
        return self._meta / (validate_digest(digest).removeprefix("sha256:") + ".json")

    def _ingest_dir(self, ref: str) -> Path:
        _validate_ref(ref)
        return self._ingests / hashlib.sha256(ref.encode()).hexdigest()

    @contextlib.contextmanager
    def _locked_meta(self) -> Iterator[None]:
        # Serializes read-modify-write of label files (update, delete) across processes.
        fd = os.open(self._meta_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_meta(self, info: Info) -> None:
        doc = {
            "created_at": info.created_at,
            "updated_at": info.updated_at,
            "labels": dict(info.labels),
        }
        _write_atomic(self._meta_path(info.digest), json.dumps(doc, sort_keys=True).encode())

    @staticmethod
    def _remove_ingest(directory: Path) -> None:
        for name in ("data", "ref", "meta.json", "lock"):
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        # ENOTEMPTY: a new writer for the same ref already created its lock; the directory is its.
        with contextlib.suppress(OSError):
            directory.rmdir()

    # Provider

    def reader_at(self, digest: str) -> ReaderAt:
        try:
            return _FileReaderAt(self._blob_path(digest))
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None

    # Manager

    def info(self, digest: str) -> Info:
        try:
            st = self._blob_path(digest).stat()
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None
        try:
            doc = json.loads(self._meta_path(digest).read_bytes())
        except FileNotFoundError:
            # A crash between link and the label write leaves a blob without meta: still valid.
            return Info(digest, st.st_size, st.st_mtime, st.st_mtime, {})
        return Info(digest, st.st_size, doc["created_at"], doc["updated_at"], doc["labels"])

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        _validate_labels(info.labels)
        with self._locked_meta():
            current = self.info(info.digest)
            labels = dict(current.labels)
            for path in fieldpaths:
                if path != "labels" and not (path.startswith("labels.") and len(path) > 7):
                    raise InvalidArgument(f"cannot update field {path!r} of content")
            if not fieldpaths or "labels" in fieldpaths:
                labels = dict(info.labels)
            else:
                for path in fieldpaths:
                    key = path[len("labels.") :]
                    if key in info.labels:
                        labels[key] = info.labels[key]
                    else:
                        labels.pop(key, None)
            updated = Info(current.digest, current.size, current.created_at, time.time(), labels)
            self._write_meta(updated)
        return updated

    def walk(self, fn: Callable[[Info], None], filters: Sequence[str] = ()) -> None:
        parsed = [_Filter.parse(f) for f in filters]
        for entry in sorted(os.listdir(self._blobs)):
            digest = "sha256:" + entry
            if _DIGEST_RE.fullmatch(digest) is None:
                continue  # not ours (an editor's temp file, say): never a reason to fail a walk
            try:
                info = self.info(digest)
            except NotFound:
                continue  # deleted while walking
            if not parsed or any(f.matches(info) for f in parsed):
                fn(info)

    def delete(self, digest: str) -> None:
        with self._locked_meta():
            try:
                self._blob_path(digest).unlink()
            except FileNotFoundError:
                raise NotFound(f"content {digest}: not found") from None
            with contextlib.suppress(FileNotFoundError):
                self._meta_path(digest).unlink()

    # Ingester

    @staticmethod
    def _lock_ingest(ref: str, directory: Path) -> int:
        """Create (if needed) and flock the ingest directory; return the lock's fd.

        Commit and abort unlink the lock file while holding it, so a lock taken on an unlinked
        file guards nothing: retry until the locked inode is the one at the path.
        """
        lock = directory / "lock"
        while True:
            with contextlib.suppress(FileExistsError):
                directory.mkdir()
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                continue  # the directory was removed between mkdir and open
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Unavailable(f"ref {ref!r} locked: another writer is active") from None
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def writer(self, ref: str, total: int = 0, expected: str | None = None) -> Writer:
        directory = self._ingest_dir(ref)
        if expected is not None and self._blob_path(expected).exists():
            raise AlreadyExists(f"content {expected}: already exists")
        if total < 0:
            raise InvalidArgument(f"negative total {total}")
        lock_fd = self._lock_ingest(ref, directory)
        try:
            meta_path = directory / "meta.json"
            if meta_path.exists():
                meta = json.loads(meta_path.read_bytes())
                # A resuming caller may now know more (the total or the digest) than the first.
                changed = False
                if total and total != meta["total"]:
                    meta["total"], changed = total, True
                if expected is not None and expected != meta["expected"]:
                    meta["expected"], changed = expected, True
                if changed:
                    _write_atomic(meta_path, json.dumps(meta).encode())
            else:
                (directory / "data").touch()
                _write_atomic(directory / "ref", ref.encode())
                meta = {"total": total, "expected": expected, "started_at": time.time()}
                _write_atomic(meta_path, json.dumps(meta).encode())
            return _FileWriter(self, ref, directory, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    # IngestManager

    def _read_status(self, directory: Path) -> Status:
        meta = json.loads((directory / "meta.json").read_bytes())
        st = (directory / "data").stat()
        return Status(
            (directory / "ref").read_text(),
            st.st_size,
            meta["total"],
            meta["expected"],
            meta["started_at"],
            st.st_mtime,
        )

    def status(self, ref: str) -> Status:
        try:
            return self._read_status(self._ingest_dir(ref))
        except FileNotFoundError:
            raise NotFound(f"ingest {ref!r}: not found") from None

    def list_statuses(self, ref_prefix: str = "") -> list[Status]:
        out = []
        for entry in sorted(os.listdir(self._ingests)):
            try:
                st = self._read_status(self._ingests / entry)
            except (FileNotFoundError, NotADirectoryError):
                continue  # being created or removed right now
            if st.ref.startswith(ref_prefix):
                out.append(st)
        return sorted(out, key=lambda s: s.ref)

    def abort(self, ref: str) -> None:
        directory = self._ingest_dir(ref)
        try:
            lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"ingest {ref!r}: not found") from None
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Unavailable(f"ref {ref!r} locked: a writer is active") from None
            try:
                same = os.stat(directory / "lock").st_ino == os.fstat(lock_fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # committed or aborted while we waited
                raise NotFound(f"ingest {ref!r}: not found")
            self._remove_ingest(directory)
        finally:
            os.close(lock_fd)
