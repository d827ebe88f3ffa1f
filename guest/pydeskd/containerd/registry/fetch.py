"""Blob download into the content store: resumable, verified, deduplicated, with progress.

What it is for: ``fetch_blob_into`` streams one blob (a layer, a config) from the registry into a
content-store ingest named ``pull-<digest>`` and commits it with the expected size and digest.

- **Resume**: an ingest left by an interrupted download (this process or a previous one)
  continues with ``Range: bytes=<offset>-``; a registry that ignores Range (200 instead of 206, or
  another start) gets the ingest restarted from zero. A connection lost mid-body is resumed the
  same way, a bounded number of times; then ``Unavailable``, with the partial ingest kept for the
  next pull.
- **Verification**: more bytes than the descriptor's size stop the download at once; a size or
  digest mismatch at commit aborts the ingest (nothing committed) and raises FailedPrecondition.
- **Dedup**: one lock per digest in this process: concurrent fetches of the same blob download it
  once; the others then find it in the store (``ALREADY_EXISTS``). Another process writing the
  same ref is waited for (the store's ref lock).
- **Progress**: DOWNLOADING (bytes, at most every 100 ms), VERIFYING, DOWNLOAD_COMPLETE.

What it must never do: commit a blob that was not verified, discard a partial download that
could be resumed (only a verification failure or a registry ignoring Range discards one), or
hold the per-digest lock of one blob while waiting for another.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from pydeskd.containerd import oci
from pydeskd.containerd.content import Ingester, IngestManager, Writer
from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from pydeskd.containerd.progress import Event, Reporter, Status
from pydeskd.containerd.reference import Reference
from pydeskd.containerd.registry.hosts import Endpoint
from pydeskd.containerd.registry.transport import ConnectionFailed, Reply, raise_for_status

if TYPE_CHECKING:
    from pydeskd.containerd.registry.client import RegistryClient

_CHUNK = 256 * 1024
PROGRESS_INTERVAL = 0.1
# Failures in a row (without progress) resumed before giving up; each reopen also has the
# transport's own retries for connection errors and 5xx.
MAX_RESUMES = 3
# How long to wait for another process's writer on the same ref.
REF_LOCK_TIMEOUT = 600.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class BlobStore(Ingester, IngestManager, Protocol):
    """What a download needs from the content store."""


class _DigestLocks:
    """One lock per digest, created on demand and dropped when nobody holds or waits on it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, digest: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(digest, (threading.Lock(), 0))
            self._locks[digest] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[digest]
                if users == 1:
                    del self._locks[digest]
                else:
                    self._locks[digest] = (lock, users - 1)


# Process-wide: two clients (two API requests) pulling the same layer share it.
DIGEST_LOCKS = _DigestLocks()


def ingest_ref(digest: str) -> str:
    return f"pull-{digest}"


def _open_writer(client: RegistryClient, store: BlobStore, ref: str,
                 desc: oci.Descriptor) -> Writer:
    """Raises AlreadyExists when the blob is in the store."""
    deadline = time.monotonic() + REF_LOCK_TIMEOUT
    while True:
        try:
            return store.writer(ref, desc.size, desc.digest)
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            client.sleep(0.2)  # another process downloads it: wait, then find it committed


class _Progress:
    def __init__(self, reporter: Reporter, desc: oci.Descriptor) -> None:
        self._reporter = reporter
        self._desc = desc
        self._last = 0.0

    def __call__(self, status: Status, current: int = 0, force: bool = False) -> None:
        if status is Status.DOWNLOADING:
            now = time.monotonic()
            if not force and now - self._last < PROGRESS_INTERVAL:
                return
            self._last = now
        self._reporter(Event(self._desc.digest, status, current, self._desc.size))


def _open_blob(client: RegistryClient, repo: Reference, desc: oci.Descriptor,
               offset: int) -> Reply:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    path = f"/v2/{repo.path}/blobs/{desc.digest}"

    def at(endpoint: Endpoint) -> Reply:
        reply = client.request(endpoint, repo, ("pull",), "GET", path, headers=headers)
        if reply.status == 416 and offset:
            return reply  # the caller restarts from zero
        return raise_for_status(reply, 200, 206)

    return client.each_endpoint(repo, at)


def _resumes_at(reply: Reply, offset: int) -> bool:
    """Does this reply continue at ``offset``? (A 200 is the whole blob.)"""
    if reply.status != 206:
        return offset == 0 and reply.status == 200
    match = _CONTENT_RANGE.fullmatch(reply.header("Content-Range").strip())
    return match is not None and int(match.group(1)) == offset


class _Ingest:
    """The open writer of one download; ``restart`` replaces it (so callers never hold a stale
    writer after a restart)."""

    def __init__(self, client: RegistryClient, store: BlobStore, desc: oci.Descriptor) -> None:
        self.client, self.store, self.desc = client, store, desc
        self.ref = ingest_ref(desc.digest)
        self.writer = _open_writer(client, store, self.ref, desc)

    @property
    def offset(self) -> int:
        return self.writer.status().offset

    def restart(self) -> None:
        """Throw the ingest away and start again from zero."""
        self.discard()
        self.writer = _open_writer(self.client, self.store, self.ref, self.desc)

    def discard(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            self.store.abort(self.ref)


def fetch_blob_into(client: RegistryClient, repo: Reference, desc: oci.Descriptor,
                    store: BlobStore, reporter: Reporter) -> bool:
    """Download ``desc`` from ``repo`` into ``store``; False if it was already there.

    Raises Unavailable (the registry went away; the partial ingest is kept and the next call
    resumes it), FailedPrecondition (size or digest mismatch; nothing committed, ingest aborted),
    NotFound, Unauthorized.
    """
    progress = _Progress(reporter, desc)
    with DIGEST_LOCKS.hold(desc.digest):
        try:
            ingest = _Ingest(client, store, desc)
        except AlreadyExists:
            progress(Status.ALREADY_EXISTS)
            return False
        try:
            if ingest.offset > desc.size:
                ingest.restart()
            failures = 0
            while ingest.offset < desc.size:
                before = ingest.offset
                try:
                    _download(client, repo, ingest, progress)
                except (ConnectionFailed, Unavailable) as e:
                    # Only failures in a row count: a long download over a flaky link that
                    # keeps making progress is resumed as often as it needs.
                    failures = failures + 1 if ingest.offset == before else 1
                    if failures > MAX_RESUMES:
                        raise Unavailable(
                            f"failed to download {desc.digest} from {repo.name}: {e} "
                            f"({ingest.offset} of {desc.size} bytes kept; the next pull "
                            "resumes)") from None
                    client.sleep(client.transport.backoff * 2 ** (failures - 1))
            progress(Status.DOWNLOADING, ingest.offset, force=True)
            progress(Status.VERIFYING)
            try:
                ingest.writer.commit(desc.size, desc.digest)
            except FailedPrecondition:
                actual, received = ingest.writer.digest(), ingest.offset
                ingest.discard()
                raise FailedPrecondition(
                    f"failed to verify {desc.digest} from {repo.name}: received {received} "
                    f"bytes with digest {actual}; nothing was stored") from None
            except AlreadyExists:
                pass  # committed by another process meanwhile: the same verified bytes
            progress(Status.DOWNLOAD_COMPLETE)
            return True
        finally:
            ingest.writer.close()


def _download(client: RegistryClient, repo: Reference, ingest: _Ingest,
              progress: _Progress) -> None:
    """One GET from the ingest's offset, appended to it.

    Raises ConnectionFailed or Unavailable when the body stops short (the caller resumes).
    """
    desc = ingest.desc
    offset = ingest.offset
    with _open_blob(client, repo, desc, offset) as reply:
        if not _resumes_at(reply, offset):
            # The registry ignored Range (or could not satisfy it): start over from zero.
            ingest.restart()
            offset = 0
            if reply.status != 200:
                return  # the caller asks again, now without Range
        progress(Status.DOWNLOADING, offset, force=True)
        for piece in reply.stream(_CHUNK):
            if offset + len(piece) > desc.size:
                ingest.discard()
                raise FailedPrecondition(
                    f"failed to verify {desc.digest} from {repo.name}: the registry sent more "
                    f"than the expected {desc.size} bytes; nothing was stored")
            ingest.writer.write(piece)
            offset += len(piece)
            progress(Status.DOWNLOADING, offset)
    if offset < desc.size:
        raise ConnectionFailed(f"connection closed after {offset} of {desc.size} bytes")


def fetch_blob(client: RegistryClient, repo: Reference, desc: oci.Descriptor,
               limit: int) -> bytes:
    """A small blob into memory, verified against ``desc``."""
    if desc.size > limit:
        raise FailedPrecondition(f"blob {desc.digest} is larger than {limit} bytes")
    with _open_blob(client, repo, desc, 0) as reply:
        try:
            data = reply.read(desc.size)
        except InvalidArgument:
            raise FailedPrecondition(f"failed to verify {desc.digest} from {repo.name}: more "
                                     f"than the expected {desc.size} bytes") from None
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if len(data) != desc.size or digest != desc.digest:
        raise FailedPrecondition(f"failed to verify {desc.digest} from {repo.name}: received "
                                 f"{len(data)} bytes with digest {digest}")
    return data


def fetch_all(client: RegistryClient, repo: Reference, descs: Sequence[oci.Descriptor],
              store: BlobStore, *, reporter: Reporter, max_workers: int) -> list[bool]:
    """Fetch every descriptor, ``max_workers`` in parallel; results in ``descs`` order.

    Every download runs to its end (or failure) before the first error is raised, so no ingest
    is left with a writer still running.
    """
    for desc in descs[max_workers:]:
        reporter(Event(desc.digest, Status.WAITING, 0, desc.size))
    with ThreadPoolExecutor(max_workers=max(1, max_workers),
                            thread_name_prefix="blob-fetch") as pool:
        futures = [pool.submit(fetch_blob_into, client, repo, d, store, reporter) for d in descs]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    return [f.result() for f in futures]
