"""The image store: names -> target descriptors, with Docker's semantics on top.

What it is for: a record is containerd's ``images.Image`` -- a normalized reference string
(``docker.io/library/busybox:latest``, ``docker.io/library/busybox@sha256:...``) pointing at an
index or a manifest in the content store. Docker 29's containerd image store builds its user
model on these records, and so does pydesk:

- the **image ID is the target digest**; several names can share one ID;
- an image whose last name moved away (``docker tag``, a pull of a newer ``latest``) stays as a
  *dangling* record named ``moby-dangling@<digest>`` (Docker shows it as ``<none>:<none>``), so
  its blobs are still GC roots until ``docker image prune`` or ``rmi <id>``;
- ``resolve`` accepts a name, ``name@digest``, a full ID or an ID prefix; ``remove`` untags or
  deletes with Docker's conflict rules and messages (``daemon/containerd/image_delete.go``).

Records live in one sqlite3 database (``root/images.db``): every change, including the
multi-record ones (tag, remove), is one transaction, so a crash leaves the old state or the new
one. The store is thread-safe (one connection behind a lock) and safe across processes
(``BEGIN IMMEDIATE``).

What it must never do: read or delete blobs (that is the content store's and GC's work;
``image_manifests`` and friends, re-exported here, live in ``image_content``), or store a name
that ``reference.parse_reference`` would refuse or spell differently.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydeskd.containerd import oci
from pydeskd.containerd.content import validate_digest
from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from pydeskd.containerd.image_content import (
    MAX_MANIFEST_SIZE,
    available_manifests,
    content_size,
    image_manifests,
    read_blob,
)
from pydeskd.containerd.reference import Reference, parse_reference

__all__ = [
    "DANGLING_PREFIX",
    "MAX_MANIFEST_SIZE",
    "ContainerUse",
    "DeleteItem",
    "Image",
    "ImageStore",
    "InUse",
    "available_manifests",
    "content_size",
    "dangling_name",
    "image_manifests",
    "normalize_name",
    "read_blob",
    "short_id",
]

# Docker 29 names an unnamed image's record this way (daemon/containerd/image.go); it is not a
# valid reference on purpose, so no user-typed name can ever collide with it.
DANGLING_PREFIX = "moby-dangling@"
_ID_PREFIX_RE = re.compile(r"(?:sha256:)?[0-9a-f]{1,64}")


def dangling_name(digest: str) -> str:
    """The record name Docker gives an image with no name."""
    return DANGLING_PREFIX + validate_digest(digest)


def normalize_name(text: str) -> str:
    """The canonical record name for what a user typed (``busybox`` -> ``docker.io/...:latest``)."""
    if text.startswith(DANGLING_PREFIX):
        return dangling_name(text[len(DANGLING_PREFIX):])
    return str(parse_reference(text))


def short_id(digest: str) -> str:
    """The 12-hex form Docker prints in messages."""
    return digest.split(":", 1)[-1][:12]


@dataclass(frozen=True)
class Image:
    """One record: ``name`` (normalized) -> ``target`` (an index or a manifest)."""

    name: str
    target: oci.Descriptor
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def id(self) -> str:
        """Docker's image ID with the containerd store: the target's digest."""
        return self.target.digest

    @property
    def dangling(self) -> bool:
        return self.name.startswith(DANGLING_PREFIX)

    @property
    def reference(self) -> Reference | None:
        """The parsed name (``None`` for a dangling record)."""
        return None if self.dangling else parse_reference(self.name, default_tag=None)

    @property
    def familiar(self) -> str:
        """The name as Docker prints it (``busybox:latest``), ``<none>:<none>`` if dangling."""
        ref = self.reference
        return "<none>:<none>" if ref is None else ref.familiar


@dataclass(frozen=True)
class ContainerUse:
    """Who uses an image, as the daemon tells ``remove`` (Docker's messages name the container)."""

    container_id: str
    running: bool


# What ``remove`` asks the daemon about an image ID: a bool, or the container that uses it.
InUse = Callable[[str], "bool | ContainerUse | None"]


@dataclass(frozen=True)
class DeleteItem:
    """One line of Docker's ``DELETE /images/{name}`` answer."""

    untagged: str = ""
    deleted: str = ""

    def to_json(self) -> dict[str, str]:
        return {"Untagged": self.untagged} if self.untagged else {"Deleted": self.deleted}


def _conflict(message: str) -> FailedPrecondition:
    return FailedPrecondition(message)


def _same_references(named: Reference, records: Sequence[Image]) -> list[Image]:
    """The records ``rmi <named>`` removes without deleting the others (moby's
    ``getSameReferences``): dangling records; records of ``named``'s repository with its tag
    (any tag if ``named`` is pinned by digest only); and that repository's digest-only names,
    unless the repository has another tag for this image."""
    all_tags = named.tag is None and named.digest is not None
    tag = named.tag
    same: list[Image] = []
    digest_refs: list[Image] | None = []
    for record in records:
        ref = record.reference
        if ref is None:
            same.append(record)
            continue
        if ref.name != named.name:
            continue
        if not all_tags:
            if ref.tag is None:
                if digest_refs is not None:
                    digest_refs.append(record)
                continue
            if tag is None:
                tag = ref.tag
            elif ref.tag != tag:
                digest_refs = None  # another tag of the repository keeps its digest names
                continue
        same.append(record)
    return same + (digest_refs or [])


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's ``path.Match`` as a regex: ``*`` and ``?`` never cross a ``/``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InvalidArgument(f"invalid reference filter {pattern!r}: syntax error")
            body = pattern[i + 1:end]
            if body.startswith("^"):
                body = "!" + body[1:]
            out.append("[" + ("^" + re.escape(body[1:]) if body.startswith("!")
                              else re.escape(body)).replace("\\-", "-") + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _row_to_image(row: Sequence[Any]) -> Image:
    name, target, labels, created_at, updated_at = row
    return Image(name, oci.Descriptor.from_json(json.loads(target), "image target"),
                 json.loads(labels), created_at, updated_at)


class ImageStore:
    """Image records under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._lock = threading.RLock()
        self._db = sqlite3.connect(root / "images.db", isolation_level=None,
                                   check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS images (name TEXT PRIMARY KEY, target TEXT NOT NULL,"
                " digest TEXT NOT NULL, labels TEXT NOT NULL, created_at REAL NOT NULL,"
                " updated_at REAL NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS images_digest ON images (digest)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; nested calls join the outer one."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- containerd's images.Store -----------------------------------------------------------

    def get(self, name: str) -> Image:
        """Raises NotFound."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, target, labels, created_at, updated_at FROM images WHERE name=?",
                (name,)).fetchone()
        if row is None:
            raise NotFound(f"image {name!r}: not found")
        return _row_to_image(row)

    def walk(self, fn: Callable[[Image], None]) -> None:
        """Call ``fn`` for every record, sorted by name (``fn`` may change the store)."""
        for image in self.all():
            fn(image)

    def all(self) -> list[Image]:
        with self._lock:
            rows = self._db.execute("SELECT name, target, labels, created_at, updated_at"
                                    " FROM images ORDER BY name").fetchall()
        return [_row_to_image(r) for r in rows]

    def by_digest(self, digest: str) -> list[Image]:
        """Every record (names and dangling) whose target is ``digest``."""
        with self._lock:
            rows = self._db.execute("SELECT name, target, labels, created_at, updated_at"
                                    " FROM images WHERE digest=? ORDER BY name",
                                    (digest,)).fetchall()
        return [_row_to_image(r) for r in rows]

    def create(self, image: Image) -> Image:
        """Add a record. Raises AlreadyExists, InvalidArgument (a name Docker would spell
        differently or refuse)."""
        self._check_record(image)
        now = time.time()
        image = replace(image, created_at=image.created_at or now, updated_at=now)
        with self._tx() as db:
            try:
                db.execute("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)", self._row(image))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"image {image.name!r}: already exists") from None
        return image

    def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        """Replace the target and labels (no field paths) or just ``target``, ``labels``,
        ``labels.<key>``. Raises NotFound, InvalidArgument."""
        self._check_record(image)
        for path in fieldpaths:
            if path not in ("target", "labels") and not path.startswith("labels."):
                raise InvalidArgument(f"cannot update field {path!r} of an image")
        with self._tx() as db:
            current = self.get(image.name)
            target, labels = current.target, dict(current.labels)
            if not fieldpaths or "target" in fieldpaths:
                target = image.target
            if not fieldpaths or "labels" in fieldpaths:
                labels = dict(image.labels)
            for path in fieldpaths:
                if path.startswith("labels."):
                    key = path[len("labels."):]
                    if key in image.labels:
                        labels[key] = image.labels[key]
                    else:
                        labels.pop(key, None)
            updated = Image(image.name, target, labels, current.created_at, time.time())
            _, target_json, digest, labels_json, _, _ = self._row(updated)
            db.execute("UPDATE images SET target=?, digest=?, labels=?, updated_at=?"
                       " WHERE name=?",
                       (target_json, digest, labels_json, updated.updated_at, updated.name))
        return updated

    def delete(self, name: str) -> None:
        """Remove one record. Raises NotFound."""
        with self._tx() as db:
            if db.execute("DELETE FROM images WHERE name=?", (name,)).rowcount == 0:
                raise NotFound(f"image {name!r}: not found")

    @staticmethod
    def _check_record(image: Image) -> None:
        validate_digest(image.target.digest)
        if normalize_name(image.name) != image.name:
            raise InvalidArgument(f"image name {image.name!r} is not normalized")
        if image.dangling and image.name != dangling_name(image.target.digest):
            raise InvalidArgument(f"dangling record {image.name!r} names another digest")

    @staticmethod
    def _row(image: Image) -> tuple[str, str, str, str, float, float]:
        return (image.name, json.dumps(image.target.to_json(), sort_keys=True),
                image.target.digest, json.dumps(dict(image.labels), sort_keys=True),
                image.created_at, image.updated_at)

    # --- Docker's semantics ------------------------------------------------------------------

    def put(self, name: str | None, target: oci.Descriptor,
            labels: Mapping[str, str] | None = None) -> Image:
        """Point ``name`` at ``target`` (create or move), as a pull, load or import ends.

        ``None`` records the image as dangling unless it already has a name. A tag moved off an
        image that has no other name leaves that image dangling; a name given to a dangling
        image removes its dangling record.
        """
        with self._tx():
            if name is None:
                existing = self.by_digest(target.digest)
                if existing:
                    return existing[0]
                return self.create(Image(dangling_name(target.digest), target, labels or {}))
            name = normalize_name(name)
            try:
                current: Image | None = self.get(name)
            except NotFound:
                current = None
            if current is None:
                image = self.create(Image(name, target, labels or {}))
            elif current.target == target and labels is None:
                image = current
            else:
                image = self.update(Image(name, target, labels if labels is not None
                                          else current.labels))
                if current.target.digest != target.digest:
                    self._keep_dangling(current.target)
            self._drop_dangling(target.digest)
            return image

    def tag(self, source: str, new_ref: str) -> Image:
        """``docker tag SOURCE NEW``: a record ``NEW`` -> SOURCE's target.

        Raises NotFound (source), InvalidArgument (bad name; a digest in ``NEW``).
        """
        ref = parse_reference(new_ref)
        if ref.digest is not None:
            raise InvalidArgument("refusing to create a tag with a digest reference")
        with self._tx():
            image = self.resolve(source)
            return self.put(str(ref), image.target)

    def _keep_dangling(self, target: oci.Descriptor) -> None:
        if not self.by_digest(target.digest):
            self.create(Image(dangling_name(target.digest), target))

    def _drop_dangling(self, digest: str) -> None:
        with contextlib.suppress(NotFound):
            self.delete(dangling_name(digest))

    def resolve(self, text: str) -> Image:
        """The record ``text`` names: a name, ``name@digest``, a full ID, or an ID prefix.

        For an ID, a named record is preferred over the dangling one. Raises NotFound ("No such
        image: ..."), InvalidArgument (an ambiguous ID prefix).
        """
        found = self._resolve(text)
        if found is None:
            raise NotFound(f"No such image: {text}")
        return found[0]

    def _resolve(self, text: str) -> tuple[Image, bool] | None:
        """(record, by_id): ``by_id`` is True when ``text`` was an ID or an ID prefix."""
        if text.startswith(DANGLING_PREFIX):
            with contextlib.suppress(NotFound, InvalidArgument):
                return self.get(normalize_name(text)), True
            return None
        if text.startswith("sha256:") and len(text) == 71:
            validate_digest(text)
            records = self.by_digest(text)
            return (self._preferred(records), True) if records else None
        try:
            ref: Reference | None = parse_reference(text)
        except InvalidArgument:
            ref = None
        if ref is not None:
            with contextlib.suppress(NotFound):
                return self.get(str(ref)), False
            if ref.digest is not None:
                # name@digest with no such record: Docker finds the image of that repository
                # whose target has that digest.
                same = [i for i in self.by_digest(ref.digest)
                        if (r := i.reference) is not None and r.name == ref.name]
                if same:
                    return same[0], False
        if _ID_PREFIX_RE.fullmatch(text):
            prefix = text if text.startswith("sha256:") else "sha256:" + text
            with self._lock:
                rows = self._db.execute(
                    "SELECT name, target, labels, created_at, updated_at FROM images"
                    " WHERE substr(digest, 1, ?) = ? ORDER BY name",
                    (len(prefix), prefix)).fetchall()
            records = [_row_to_image(r) for r in rows]
            digests = {r.id for r in records}
            if len(digests) > 1:
                raise InvalidArgument(
                    f"multiple IDs found with provided prefix: {text.removeprefix('sha256:')}")
            if records:
                return self._preferred(records), True
        if ref is None and not _ID_PREFIX_RE.fullmatch(text):
            parse_reference(text)  # re-raise Docker's message for a malformed name
        return None

    @staticmethod
    def _preferred(records: Sequence[Image]) -> Image:
        named = [r for r in records if not r.dangling]
        return (named or list(records))[0]

    def remove(self, text: str, force: bool = False,
               in_use: InUse | None = None) -> list[DeleteItem]:
        """``docker rmi``, as Docker 29's containerd image service does it.

        By name: the names that are "the same reference" (that name, plus digest names of its
        repository when it has no other tag) are untagged; if they are all the image's names,
        the image is deleted -- unless a container uses it: Conflict, or with ``force`` the
        image stays as a dangling record. By ID (or prefix, or dangling name): every name goes
        and the image is deleted; a running container's image cannot be (even by force), a
        stopped container's or one with several names needs ``force``.

        Raises NotFound, InvalidArgument (ambiguous prefix), FailedPrecondition (409 conflict).
        """
        with self._tx():
            found = self._resolve(text)
            if found is None:
                raise NotFound(f"No such image: {text}")
            image, by_id = found
            digest = image.id
            records = self.by_digest(digest)
            use = in_use(digest) if in_use is not None else None
            if isinstance(use, bool) or use is None:
                use = ContainerUse("", running=False) if use else None
            if by_id:
                return self._delete_all(image, records, use, check_names=not force, force=force)
            typed = parse_reference(text)
            exact = str(typed) == image.name
            named = image.reference if exact else typed
            assert named is not None
            same = _same_references(named, records)
            if len(same) != len(records):
                for record in same:
                    self.delete(record.name)
                return [DeleteItem(untagged=r.familiar) for r in same if not r.dangling]
            familiar = named.familiar
            if use is not None:
                if not force:
                    who = f" {short_id(use.container_id)}" if use.container_id else ""
                    raise _conflict(
                        f"conflict: unable to delete {familiar} (must be forced) - container"
                        f"{who} is using its referenced image {short_id(digest)}")
                # Forced: untag, but the container still needs its image.
                for record in records:
                    self.delete(record.name)
                self.create(Image(dangling_name(digest), image.target, image.labels,
                                  image.created_at))
                return [DeleteItem(untagged=familiar)]
            return self._delete_all(image, records, use, check_names=False, force=force)

    def _delete_all(self, image: Image, records: Sequence[Image], use: ContainerUse | None,
                    *, check_names: bool, force: bool) -> list[DeleteItem]:
        digest = short_id(image.id)
        if use is not None and use.running:
            raise _conflict(
                f"conflict: unable to delete {digest} (cannot be forced) - image is being used"
                f" by running container {short_id(use.container_id)}".rstrip())
        if use is not None and not force:
            raise _conflict(
                f"conflict: unable to delete {digest} (must be forced) - image is being used"
                f" by stopped container {short_id(use.container_id)}".rstrip())
        if check_names and len(records) > 1:
            raise _conflict(f"conflict: unable to delete {digest} (must be forced) - image is"
                            " referenced in multiple repositories")
        out = []
        for record in records:
            self.delete(record.name)
            if not record.dangling:
                out.append(DeleteItem(untagged=record.familiar))
        out.append(DeleteItem(deleted=image.id))
        return out

    def list(self, filters: Mapping[str, Sequence[str]] | None = None,
             config_labels: Callable[[Image], Mapping[str, str]] | None = None) -> list[Image]:
        """Records matching Docker's ``docker images --filter`` set (all filters must match).

        ``reference=<glob>`` (Go ``path.Match`` on the familiar name, with or without tag),
        ``dangling=true|false``, ``label=<key>[=<value>]`` (on ``config_labels(image)``, the
        image config's labels as Docker filters them; the record's labels if not given),
        ``before=<image>`` / ``since=<image>`` (by creation time). Raises InvalidArgument for
        an unknown filter, NotFound for a before/since image that does not exist.
        """
        filters = dict(filters or {})
        for key in filters:
            if key not in ("reference", "dangling", "label", "before", "since"):
                raise InvalidArgument(f"invalid filter '{key}'")
        dangling: bool | None = None
        for value in filters.get("dangling", ()):
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={value}'")
            dangling = value.lower() in ("true", "1")
        patterns = [_glob_regex(p) for p in filters.get("reference", ())]
        before = [self.resolve(t).created_at for t in filters.get("before", ())]
        since = [self.resolve(t).created_at for t in filters.get("since", ())]
        labels_of = config_labels or (lambda image: image.labels)
        out = []
        for image in self.all():
            if dangling is not None and image.dangling != dangling:
                continue
            if patterns and not self._reference_matches(image, patterns):
                continue
            if any(image.created_at >= b for b in before):
                continue
            if any(image.created_at <= s for s in since):
                continue
            if filters.get("label") and not all(
                    _label_matches(labels_of(image), f) for f in filters["label"]):
                continue
            out.append(image)
        return out

    @staticmethod
    def _reference_matches(image: Image, patterns: Sequence[re.Pattern[str]]) -> bool:
        ref = image.reference
        if ref is None:
            return False
        candidates = [ref.familiar_name, ref.familiar]
        return any(p.fullmatch(c) for p in patterns for c in candidates)


def _label_matches(labels: Mapping[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value
