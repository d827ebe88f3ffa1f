"""Compression detection, streaming decompression and diff_id hashing."""

from __future__ import annotations

import io
import os

import pytest
import zstandard

from pydeskd.containerd.archive.compression import (
    BlobReader,
    DiffReader,
    Kind,
    detect,
    open_layer,
)
from tests.unit.containerd.archive.layers import file, gzipped, layer, sha256, zstded


class BytesReaderAt:
    """A ``ReaderAt`` over bytes that serves at most ``chunk`` bytes per read."""

    def __init__(self, data: bytes, chunk: int = 1 << 20) -> None:
        self.data, self.chunk, self.closed = data, chunk, False

    @property
    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, n: int) -> bytes:
        return self.data[offset: offset + min(n, self.chunk)]

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> BytesReaderAt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


TAR = layer(file("a", os.urandom(300_000)), file("b/c", b"hello"))


@pytest.mark.parametrize(("compress", "kind"), [
    (lambda d: d, Kind.PLAIN), (gzipped, Kind.GZIP), (zstded, Kind.ZSTD)])
def test_diff_id_is_the_sha256_of_the_uncompressed_stream(compress, kind) -> None:  # type: ignore[no-untyped-def]
    blob = compress(TAR)
    diff = open_layer(BytesReaderAt(blob, chunk=7777))
    assert diff.kind is kind
    assert io.BufferedReader(diff).read(100) == TAR[:100]
    diff.drain()
    assert diff.digest() == sha256(TAR)
    assert diff.size == len(TAR)


def test_detect_by_magic_not_by_name() -> None:
    assert detect(b"\x1f\x8b\x08\x00") is Kind.GZIP
    assert detect(b"\x28\xb5\x2f\xfd") is Kind.ZSTD
    assert detect(b"ustar") is Kind.PLAIN
    assert detect(b"") is Kind.PLAIN


def test_empty_blob_is_an_empty_plain_stream() -> None:
    diff = open_layer(BytesReaderAt(b""))
    diff.drain()
    assert diff.digest() == sha256(b"")


def test_zstd_with_several_frames_is_read_across_frames() -> None:
    blob = zstded(TAR[:1000]) + zstded(TAR[1000:])
    diff = open_layer(BytesReaderAt(blob))
    diff.drain()
    assert diff.digest() == sha256(TAR)


def test_multi_member_gzip_is_read_whole() -> None:
    blob = gzipped(TAR[:5000]) + gzipped(TAR[5000:])
    diff = DiffReader(BlobReader(BytesReaderAt(blob)))
    diff.drain()
    assert diff.digest() == sha256(TAR)


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_zstd_fails_or_changes_the_diff_id(damage: str) -> None:
    blob = bytearray(zstded(TAR))
    if damage == "corrupt":
        blob[20:40] = b"\xff" * 20
    else:
        del blob[len(blob) // 2:]
    diff = open_layer(BytesReaderAt(bytes(blob)))
    try:
        diff.drain()
    except zstandard.ZstdError:
        return
    assert diff.digest() != sha256(TAR)


def test_blob_reader_reports_compressed_offsets() -> None:
    seen: list[int] = []
    reader = BlobReader(BytesReaderAt(b"x" * 10_000, chunk=4096), seen.append)
    assert io.BufferedReader(reader).read() == b"x" * 10_000
    assert seen[-1] == 10_000
    assert seen == sorted(seen)
