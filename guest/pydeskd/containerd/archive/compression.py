"""Layer compression: detect it from the first bytes, decompress as a stream, hash what comes out.

What it is for: a layer blob is read once, sequentially; the tar reader gets the uncompressed
bytes and, at the same time, their sha256 is taken: that is the layer's diff_id (OCI image spec,
"Layer DiffID"), which the unpacker checks against the image config.

What it must never do: load a whole layer into memory, or trust the media type over the bytes
(a mislabelled blob is decompressed by what it is; the diff_id check catches a wrong one).
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import io
from collections.abc import Callable

import zstandard

from pydeskd.containerd.content import ReaderAt

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


class Kind(enum.Enum):
    PLAIN = "plain"
    GZIP = "gzip"
    ZSTD = "zstd"


def detect(head: bytes) -> Kind:
    """The compression of a stream that starts with ``head`` (at least 4 bytes if it has them)."""
    if head.startswith(_GZIP_MAGIC):
        return Kind.GZIP
    if head.startswith(_ZSTD_MAGIC):
        return Kind.ZSTD
    return Kind.PLAIN


class BlobReader(io.RawIOBase):
    """Sequential reading of a content-store blob (``ReaderAt``), counting the bytes read.

    ``on_read(total_so_far)`` is called after each read, so the unpacker can report extraction
    progress in compressed bytes, as Docker does.
    """

    def __init__(self, reader: ReaderAt, on_read: Callable[[int], None] | None = None) -> None:
        self._reader = reader
        self._offset = 0
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._reader.read_at(self._offset, len(buffer))
        n = len(data)
        buffer[:n] = data
        self._offset += n
        if self._on_read is not None and n:
            self._on_read(self._offset)
        return n

    @property
    def offset(self) -> int:
        return self._offset


class _Peekable(io.RawIOBase):
    """A raw stream with its first bytes already read (for detection) and put back."""

    def __init__(self, head: bytes, rest: io.RawIOBase) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto(buffer) or 0


def _read_head(raw: io.RawIOBase, n: int) -> bytes:
    head = b""
    while len(head) < n:
        chunk = raw.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


class DiffReader(io.RawIOBase):
    """The uncompressed bytes of a layer, hashed as they are read: ``digest()`` is the diff_id.

    Read it to the end (``drain``) before asking for the digest: the tar reader stops at the
    end-of-archive marker, but the diff_id covers every byte, padding included.
    """

    def __init__(self, raw: io.RawIOBase) -> None:
        head = _read_head(raw, 4)
        self.kind = detect(head)
        source = _Peekable(head, raw)
        self._stream: io.RawIOBase | io.BufferedIOBase | zstandard.ZstdDecompressionReader
        if self.kind is Kind.GZIP:
            self._stream = gzip.GzipFile(fileobj=io.BufferedReader(source, _CHUNK), mode="rb")
        elif self.kind is Kind.ZSTD:
            self._stream = zstandard.ZstdDecompressor().stream_reader(
                io.BufferedReader(source, _CHUNK), read_size=_CHUNK, read_across_frames=True)
        else:
            # tar reads in 10 KiB records: buffer, so the blob is read in large preads.
            self._stream = io.BufferedReader(source, _CHUNK)
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        if data is None:
            return 0
        n = len(data)
        buffer[:n] = data
        self._hash.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        """Read (and hash) whatever the consumer left unread."""
        while True:
            data = self._stream.read(_CHUNK)
            if not data:
                return
            self._hash.update(data)
            self.size += len(data)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def open_layer(reader: ReaderAt, on_read: Callable[[int], None] | None = None) -> DiffReader:
    """A ``DiffReader`` over a content-store blob, whatever its compression."""
    return DiffReader(BlobReader(reader, on_read))
