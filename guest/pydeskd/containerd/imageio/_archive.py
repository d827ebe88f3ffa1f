"""Reading an untrusted image archive into a verified, uncommitted table of members.

What it is for: ``docker load`` and OCI layout imports read a tar stream of unknown origin.
``spool_tar`` reads it once, front to back: each regular member is hashed while it is read
(plus the sha256 of its decompressed bytes when it is gzip or zstd, which is the diff_id
``manifest.json`` archives are checked against) and kept in memory if small, or written to an
uncommitted ingest of the content store if large. ``Archive.commit`` then makes one member a
blob, verified against the expected digest and size. Every decompression is bounded
(``_inflate``): a small archive may inflate to gigabytes, hashed or spooled piece by piece.

What it must never do: create a file from a member name (names are dictionary keys), resolve a
link outside the archive, keep an ingest after ``abort``, or trust a header's size (a short
member, a truncated stream, or garbage after an early end is an error), or hold the output of
a decompression whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import stat
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydeskd.containerd.archive.compression import Kind, detect
from pydeskd.containerd.content import Store, validate_digest
from pydeskd.containerd.errors import AlreadyExists, InvalidArgument, NotFound
from pydeskd.containerd.imageio._inflate import CorruptStream, Inflater, open_archive_stream

# Members up to this size stay in memory (every manifest, config and index.json is far
# smaller); larger ones go to an ingest. The memory budget bounds a tar of many small members.
SMALL_MEMBER = 1 << 20
MEMORY_BUDGET = 256 << 20
MAX_MEMBERS = 100_000
MAX_LINK_HOPS = 8
_CHUNK = 1 << 20
_SNIFF = 6  # enough to tell gzip, bzip2, xz and zstd apart
_KIND_NAMES = {Kind.PLAIN: "none", Kind.GZIP: "gzip", Kind.ZSTD: "zstd"}


def clean_member_name(name: str) -> str:
    """``./a//b`` -> ``a/b``; refuses absolute names, ``..``, NUL and empty names."""
    if "\0" in name or name.startswith("/") or "\\" in name:
        raise InvalidArgument(f"invalid archive member name {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise InvalidArgument(f"invalid archive member name {name!r}")
    return "/".join(parts)


class _DiffHasher:
    """sha256 of the decompressed bytes of a gzip or zstd stream, fed chunk by chunk.

    Decompression is bounded (``Inflater``): a member of a few KiB may inflate to gigabytes,
    which are hashed piece by piece as Docker does, never held. A stream that is corrupt or
    truncated has no diff_id (None), so the diff_id check refuses it."""

    def __init__(self, kind: Kind) -> None:
        self._hash = hashlib.sha256()
        self._inflater = Inflater(kind, self._hash.update)
        self.failed = False

    def update(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            self._inflater.feed(data)
        except CorruptStream:
            self.failed = True  # not really compressed: the diff_id check will fail

    def hexdigest(self) -> str | None:
        if not self.failed:
            try:
                self._inflater.finish()
            except CorruptStream:
                self.failed = True
        return None if self.failed else "sha256:" + self._hash.hexdigest()


@dataclass
class Member:
    """One regular file of the archive, hashed; ``data`` in memory or an ingest ``ref``."""

    name: str
    size: int
    digest: str
    compression: str  # "none", "gzip", "zstd" (from the first bytes, not the name)
    diff_id: str | None  # sha256 of the uncompressed bytes (= digest when not compressed)
    data: bytes | None = None
    ref: str | None = None


class Archive:
    """The members of one archive; see the module docstring. Use as a context manager: the
    ingests of members never committed are aborted on exit."""

    def __init__(self, content: Store) -> None:
        self.content = content
        self.members: dict[str, Member] = {}
        self.links: dict[str, str] = {}
        self._memory = 0
        self.committed: set[str] = set()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    # --- building ----------------------------------------------------------------------------

    def add_stream(self, name: str, size: int, fileobj: IO[bytes]) -> Member:
        """Read exactly ``size`` bytes of member ``name`` from ``fileobj``."""
        if name in self.members or name in self.links:
            raise InvalidArgument(f"archive member {name!r} appears twice")
        if len(self.members) + len(self.links) >= MAX_MEMBERS:
            raise InvalidArgument(f"archive has more than {MAX_MEMBERS} members")
        digest = hashlib.sha256()
        head = fileobj.read(min(size, _CHUNK)) if size else b""
        kind = detect(head)
        diff = _DiffHasher(kind) if kind is not Kind.PLAIN else None
        keep = size <= SMALL_MEMBER and self._memory + size <= MEMORY_BUDGET
        chunks: list[bytes] = []
        writer = None
        ref = None
        if not keep:
            ref = f"imageio-{uuid.uuid4().hex}"
            writer = self.content.writer(ref, total=size)
        try:
            done = 0
            chunk = head
            while True:
                if chunk:
                    done += len(chunk)
                    if done > size:
                        raise InvalidArgument(f"archive member {name!r} is longer than its size")
                    digest.update(chunk)
                    if diff is not None:
                        diff.update(chunk)
                    if writer is not None:
                        writer.write(chunk)
                    else:
                        chunks.append(chunk)
                if done == size:
                    break
                chunk = fileobj.read(min(size - done, _CHUNK))
                if not chunk:
                    raise InvalidArgument(
                        f"archive member {name!r} is truncated: {done} of {size} bytes")
        except BaseException:
            if writer is not None:
                writer.close()
                with contextlib.suppress(NotFound):
                    self.content.abort(ref or "")
            raise
        if writer is not None:
            writer.close()
        member = Member(name, size, "sha256:" + digest.hexdigest(), _KIND_NAMES[kind],
                        diff.hexdigest() if diff is not None else None, ref=ref)
        if member.compression == "none":
            member.diff_id = member.digest
        if keep:
            member.data = b"".join(chunks)
            self._memory += size
        self.members[name] = member
        return member

    def add_synthetic(self, data: bytes) -> Member:
        """A document the importer made (a manifest for a ``manifest.json`` archive): kept
        under a name no archive member can have."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        name = f"\0synthetic/{digest}"
        if name not in self.members:
            self.members[name] = Member(name, len(data), digest, "none", digest, data=data)
        return self.members[name]

    def add_link(self, name: str, target: str) -> None:
        """An alias ``name`` -> ``target`` (both cleaned member names)."""
        if name in self.members or name in self.links:
            raise InvalidArgument(f"archive member {name!r} appears twice")
        self.links[name] = target

    # --- reading -----------------------------------------------------------------------------

    def get(self, name: str) -> Member | None:
        """The member ``name`` names, following aliases; None if absent."""
        try:
            name = clean_member_name(name)
        except InvalidArgument:
            return None
        for _ in range(MAX_LINK_HOPS):
            if name in self.members:
                return self.members[name]
            if name not in self.links:
                return None
            name = self.links[name]
        raise InvalidArgument(f"archive member {name!r}: too many levels of links")

    def blob(self, digest: str) -> Member | None:
        """The member ``blobs/sha256/<hex>`` of an OCI layout, checked against its name."""
        member = self.get("blobs/sha256/" + validate_digest(digest).removeprefix("sha256:"))
        if member is not None and member.digest != digest:
            raise InvalidArgument(
                f"archive blob {digest} has digest {member.digest}: refusing the archive")
        return member

    @staticmethod
    def read(member: Member, what: str) -> bytes:
        """The bytes of a small member (a JSON document)."""
        if member.data is None:
            raise InvalidArgument(f"{what} {member.name!r} is too large ({member.size} bytes)")
        return member.data

    # --- committing --------------------------------------------------------------------------

    def commit(self, member: Member, labels: dict[str, str] | None = None) -> bool:
        """Make ``member`` the blob ``member.digest``; False if it was already there."""
        if member.digest in self.committed:
            return False
        new = True
        try:
            if member.ref is not None:
                with self.content.writer(member.ref, total=member.size) as writer:
                    writer.commit(member.size, member.digest, labels)
                member.ref = None
            else:
                with self.content.writer(f"imageio-{uuid.uuid4().hex}", member.size,
                                         member.digest) as writer:
                    writer.write(member.data or b"")
                    writer.commit(member.size, member.digest, labels)
        except AlreadyExists:
            new = False
            if member.ref is not None:
                with contextlib.suppress(NotFound):
                    self.content.abort(member.ref)
                member.ref = None
        self.committed.add(member.digest)
        return new

    def abort(self) -> None:
        """Drop every ingest still held (members that were never committed)."""
        for member in self.members.values():
            if member.ref is not None:
                with contextlib.suppress(NotFound):
                    self.content.abort(member.ref)
                member.ref = None


def spool_tar(stream: IO[bytes], archive: Archive) -> None:
    """Read a (possibly gzip, bzip2, xz or zstd compressed) tar stream into ``archive``.

    Raises InvalidArgument for a malformed or hostile archive: names with ``..`` or a leading
    ``/``, links that leave the archive, devices and FIFOs, truncated members, trailing
    garbage after what looks like the end.
    """
    head = read_full(stream, _SNIFF)
    # Not tarfile's "r|*": it inflates a whole input record per read without a bound, and
    # 10 KiB of bzip2 can be gigabytes.
    source = open_archive_stream(head, _Prefixed(head, stream))  # type: ignore[arg-type]
    try:
        tar = tarfile.open(fileobj=source, mode="r|")  # noqa: SIM115 (closed below)
    except tarfile.TarError as e:
        raise InvalidArgument(f"invalid tar archive: {e}") from None
    with tar:
        try:
            for info in tar:
                _spool_member(tar, info, archive)
        except tarfile.TarError as e:
            raise InvalidArgument(f"invalid tar archive: {e}") from None
        # tarfile stops quietly at a header it cannot parse: a member whose header claimed
        # fewer bytes than it has looks like that. Anything but zero padding after the end is
        # an error, not a shorter archive.
        rest = tar.fileobj
        assert rest is not None
        while chunk := rest.read(_CHUNK):
            if chunk.strip(b"\0"):
                raise InvalidArgument("invalid tar archive: data after the end of the archive"
                                      " (a member's size is wrong)")
    for name in archive.links:
        if archive.get(name) is None:
            raise InvalidArgument(f"archive link {name!r} points at nothing in the archive")


def read_full(stream: IO[bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


class _Prefixed:
    """``head`` (already read to sniff the format) followed by the rest of ``stream``; reads
    are filled, because tarfile sniffs compression from a single read."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = head
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(n)
        head, self._head = self._head, b""
        if n < 0:
            return head + self._stream.read()
        if n <= len(head):
            self._head = head[n:]
            return head[:n]
        return head + read_full(self._stream, n - len(head))

    def readable(self) -> bool:
        return True


def _spool_member(tar: tarfile.TarFile, info: tarfile.TarInfo, archive: Archive) -> None:
    name = clean_member_name(info.name)
    if info.isdir():
        return
    if info.issym() or info.islnk():
        if info.issym():
            if info.linkname.startswith("/"):
                raise InvalidArgument(f"archive link {info.name!r} is absolute")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))
        else:
            target = posixpath.normpath(info.linkname)
        if target.startswith("../") or target == ".." or target.startswith("/"):
            raise InvalidArgument(f"archive link {info.name!r} points outside the archive")
        archive.add_link(name, clean_member_name(target))
        return
    if not info.isreg():
        raise InvalidArgument(f"archive member {info.name!r} is not a regular file")
    fileobj = tar.extractfile(info)
    assert fileobj is not None
    archive.add_stream(name, info.size, fileobj)


def spool_layout_dir(root: Path, archive: Archive) -> None:
    """Read an OCI image layout directory: ``oci-layout``, ``index.json`` and every file
    named by a digest under ``blobs/sha256`` (opened without following links: a link or a
    non-regular file there is an error; other names are ignored)."""

    def add(path: Path, name: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as e:
            raise InvalidArgument(f"cannot read {name} of the layout: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"{name} of the layout is not a regular file")
            archive.add_stream(name, st.st_size, f)

    add(root / "oci-layout", "oci-layout")
    add(root / "index.json", "index.json")
    blobs = root / "blobs" / "sha256"
    if blobs.is_dir() and not blobs.is_symlink():
        for entry in sorted(os.listdir(blobs)):
            try:
                validate_digest("sha256:" + entry)
            except InvalidArgument:
                continue
            add(blobs / entry, f"blobs/sha256/{entry}")


def iter_chunks(reader: Any, size: int) -> Iterator[bytes]:
    """Read a content ``ReaderAt`` sequentially."""
    offset = 0
    while offset < size:
        chunk = reader.read_at(offset, min(_CHUNK, size - offset))
        if not chunk:
            raise InvalidArgument("blob is shorter than its size")
        offset += len(chunk)
        yield chunk
