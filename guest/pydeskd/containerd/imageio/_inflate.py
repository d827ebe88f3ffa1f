"""Bounded decompression of untrusted streams: layers pushed chunk by chunk, archives pulled.

What it is for: a few KiB of zstd or bzip2 can be gigabytes of zeros, and image archives come
from anyone. ``Inflater`` takes compressed bytes as they arrive (a tar member being spooled,
a ``docker import`` body) and hands the decompressed bytes to a sink in pieces of at most
``CHUNK`` bytes; ``open_archive_stream`` gives a file whose reads decompress only what they
return (for the outer compression of a ``docker load`` tar, which ``tarfile``'s own stream
mode would inflate a whole input record at a time). Both say when a stream stopped before its
end marker.

What it must never do: decompress without a bound on the output of one step, hold more than
one output piece (plus the decompressor's window), or call a truncated stream complete.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable
from typing import IO, Any, Protocol, cast

import zstandard

from pydeskd.containerd.archive.compression import Kind, detect
from pydeskd.containerd.errors import InvalidArgument

CHUNK = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
# A gzip member: the first bytes were checked to be gzip, so no zlib or raw deflate.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class CorruptStream(InvalidArgument):
    """The compressed bytes are not a valid stream of their kind, or stop before its end."""


class ZstdFrames:
    """Follows the frame and block headers of a zstd stream (RFC 8878), without decoding.

    python-zstandard's streaming decompressors stop quietly when their input ends in the middle
    of a frame; this is how a truncated stream is told from a complete one. Only headers are
    looked at (a few bytes per block of up to 128 KiB); block contents are skipped by size.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._want = 4
        self._skip = 0
        self._checksum = False
        self._step: Callable[[bytes], None] = self._magic

    @property
    def complete(self) -> bool:
        """True when everything fed so far is whole frames."""
        return self._step == self._magic and not self._skip and not self._buf

    def feed(self, data: bytes) -> None:
        """Raises CorruptStream on bytes that cannot start a frame or a block."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                n = min(self._skip, end - pos)
                self._skip -= n
                pos += n
                continue
            n = min(self._want - len(self._buf), end - pos)
            self._buf += data[pos:pos + n]
            pos += n
            if len(self._buf) == self._want:
                header = bytes(self._buf)
                self._buf.clear()
                self._step(header)

    def _expect(self, want: int, step: Callable[[bytes], None], skip: int = 0) -> None:
        self._want, self._step, self._skip = want, step, skip

    def _magic(self, header: bytes) -> None:
        if header == _ZSTD_MAGIC:
            self._expect(1, self._descriptor)
        elif header[1:] == b"\x2a\x4d\x18" and header[0] & 0xF0 == 0x50:
            self._expect(4, self._skippable)  # a skippable frame: its size, then its bytes
        else:
            raise CorruptStream("corrupt zstd stream: no frame where one should start")

    def _skippable(self, header: bytes) -> None:
        self._expect(4, self._magic, skip=int.from_bytes(header, "little"))

    def _descriptor(self, header: bytes) -> None:
        flags = header[0]
        single_segment = bool(flags & 0x20)
        self._checksum = bool(flags & 0x04)
        if flags & 0x08:
            raise CorruptStream("corrupt zstd stream: reserved frame header bit set")
        content_size = (1 if single_segment else 0, 2, 4, 8)[flags >> 6]
        dictionary_id = (0, 1, 2, 4)[flags & 0x03]
        window = 0 if single_segment else 1
        self._expect(3, self._block, skip=window + dictionary_id + content_size)

    def _block(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:
            raise CorruptStream("corrupt zstd stream: reserved block type")
        body = 1 if kind == 1 else size  # an RLE block stores its one byte
        if last:
            self._expect(4, self._magic, skip=body + (4 if self._checksum else 0))
        else:
            self._expect(3, self._block, skip=body)


class _Sink:
    """The file-like end a zstd stream writer writes decompressed pieces to."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink(bytes(data))
        return len(data)


class Inflater:
    """Compressed bytes in (``feed``), decompressed pieces of at most ``CHUNK`` bytes out to
    ``sink``; ``finish`` checks the stream ended at its end marker. ``Kind.PLAIN`` passes the
    bytes through. Errors raised by ``sink`` propagate unchanged."""

    def __init__(self, kind: Kind, sink: Callable[[bytes], None]) -> None:
        self.kind = kind
        self._sink = sink
        self._gzip: Any = zlib.decompressobj(_GZIP_WBITS) if kind is Kind.GZIP else None
        self._frames = ZstdFrames() if kind is Kind.ZSTD else None
        self._zstd: Any = None
        if kind is Kind.ZSTD:
            # The writer decodes into a CHUNK-sized buffer and writes each full buffer out
            # before decoding more: the output of one feed never piles up.
            self._zstd = zstandard.ZstdDecompressor().stream_writer(
                cast(IO[bytes], _Sink(sink)), write_size=CHUNK, write_return_read=True,
                closefd=False)

    def feed(self, data: bytes) -> None:
        """Raises CorruptStream when ``data`` cannot continue the stream."""
        if self.kind is Kind.PLAIN:
            if data:
                self._sink(data)
        elif self.kind is Kind.GZIP:
            self._feed_gzip(data)
        else:
            assert self._frames is not None
            self._frames.feed(data)
            try:
                self._zstd.write(data)
            except zstandard.ZstdError as e:
                raise CorruptStream(f"corrupt zstd stream: {e}") from None

    def _feed_gzip(self, data: bytes) -> None:
        while True:
            try:
                out = self._gzip.decompress(data, CHUNK)
            except zlib.error as e:
                raise CorruptStream(f"corrupt gzip stream: {e}") from None
            if out:
                self._sink(out)
            if self._gzip.eof:
                data = self._gzip.unused_data
                if not data:
                    return
                # A multi-member gzip stream (pigz, concatenated files): the next one starts.
                self._gzip = zlib.decompressobj(_GZIP_WBITS)
                continue
            data = self._gzip.unconsumed_tail
            # A full piece may leave output inside zlib with no input left: ask again.
            if not data and len(out) < CHUNK:
                return

    def finish(self) -> None:
        """Raises CorruptStream if the stream stopped before its end marker."""
        if self.kind is Kind.GZIP and not self._gzip.eof:
            raise CorruptStream("truncated gzip stream")
        if self._frames is not None and not self._frames.complete:
            raise CorruptStream("truncated zstd stream")


# --- archives read by tarfile --------------------------------------------------------------


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Checked(io.RawIOBase):
    """Reads of a decompressing file, its errors turned into CorruptStream; for zstd, the
    frames followed so that an end in the middle of one is an error too."""

    def __init__(self, what: str, inner: _Reader, errors: tuple[type[BaseException], ...],
                 frames: ZstdFrames | None = None) -> None:
        self._what = what
        self._inner = inner
        self._errors = errors
        self._frames = frames

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._inner.read(len(buffer))
        except EOFError:
            raise CorruptStream(f"truncated {self._what} stream") from None
        except self._errors as e:
            raise CorruptStream(f"corrupt {self._what} stream: {e}") from None
        if not data and self._frames is not None and not self._frames.complete:
            raise CorruptStream(f"truncated {self._what} stream")
        n = len(data)
        buffer[:n] = data
        return n


class _Tee(io.RawIOBase):
    """The compressed bytes of a zstd archive, shown to a ``ZstdFrames`` as they are read."""

    def __init__(self, source: IO[bytes], frames: ZstdFrames) -> None:
        self._source = source
        self._frames = frames

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        if not data:
            return 0
        self._frames.feed(data)
        n = len(data)
        buffer[:n] = data
        return n


def open_archive_stream(head: bytes, source: IO[bytes]) -> IO[bytes]:
    """The uncompressed bytes of an archive that may be gzip, bzip2, xz or zstd compressed
    (Docker loads all four), decompressed only as far as each read needs. ``head`` is at least
    the first 6 bytes of ``source``, which must still return them. Reads raise CorruptStream
    on bad or truncated compressed data."""
    inner: _Reader
    if head.startswith(_XZ_MAGIC):
        inner = lzma.LZMAFile(source)  # noqa: SIM115 (holds no descriptor)
        return io.BufferedReader(_Checked("xz", inner, (lzma.LZMAError,)), CHUNK)
    if head.startswith(_BZIP2_MAGIC):
        # bz2 reports bad data as a bare OSError (as tarfile treats it).
        inner = bz2.BZ2File(source)
        return io.BufferedReader(_Checked("bzip2", inner, (OSError,)), CHUNK)
    kind = detect(head)
    if kind is Kind.GZIP:
        inner = gzip.GzipFile(fileobj=source, mode="rb")
        return io.BufferedReader(_Checked("gzip", inner, (zlib.error, gzip.BadGzipFile)), CHUNK)
    if kind is Kind.ZSTD:
        frames = ZstdFrames()
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], _Tee(source, frames)), read_size=CHUNK, read_across_frames=True)
        return io.BufferedReader(_Checked("zstd", reader, (zstandard.ZstdError,), frames), CHUNK)
    return source
