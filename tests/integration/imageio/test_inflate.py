"""Bounded decompression (imageio/_inflate): round trips, pieces never above CHUNK, truncated
and corrupt streams refused; and the same through ``docker load`` of compressed archives."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from pydeskd.containerd.archive.compression import Kind
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.imageio import docker_archive
from pydeskd.containerd.imageio._inflate import (
    CHUNK,
    CorruptStream,
    Inflater,
    ZstdFrames,
    open_archive_stream,
)
from tests.integration.imageio.helpers import layer_tar, sha, stores
from tests.integration.imageio.test_save_load import legacy_archive

PAYLOAD = random.Random(7).randbytes(300_000) + bytes(3 << 20) + b"abc" * 100_000
SKIPPABLE = b"\x5a\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"


def zstd(data: bytes, **kw: object) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)  # type: ignore[arg-type]


def zstd_streamed(data: bytes, **kw: object) -> bytes:
    """No content size in the frame header, many blocks."""
    c = zstandard.ZstdCompressor(**kw).compressobj()  # type: ignore[arg-type]
    return c.compress(data) + c.flush()


def zstd_cli(*args: str) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        return subprocess.run(["zstd", "-c", *args], input=data, capture_output=True,
                              check=True).stdout
    return run


def inflate(kind: Kind, blob: bytes, step: int) -> list[bytes]:
    pieces: list[bytes] = []
    inflater = Inflater(kind, pieces.append)
    for i in range(0, len(blob), step):
        inflater.feed(blob[i:i + step])
    inflater.finish()
    return pieces


ZSTD_STREAMS: dict[str, Callable[[bytes], bytes]] = {
    "level1": lambda d: zstd(d, level=1),
    "level19-checksum": lambda d: zstd(d, level=19, write_checksum=True),
    "no-content-size": lambda d: zstd(d, write_content_size=False),
    "streamed": zstd_streamed,
    "streamed-checksum": lambda d: zstd_streamed(d, write_checksum=True),
    "threads": lambda d: zstd(d * 4, threads=2),
    "cli-long": zstd_cli("-19", "--long=27"),
    "cli-threads": zstd_cli("-T2", "-1"),
    "frames": lambda d: zstd(b"one") + SKIPPABLE + zstd(b"") + zstd(d, write_checksum=True),
}


@pytest.mark.parametrize("name", list(ZSTD_STREAMS))
@pytest.mark.parametrize("step", [1, 4093, 1 << 20])
def test_zstd_round_trip(name: str, step: int) -> None:
    data = PAYLOAD if step > 1 else PAYLOAD[:20_000]  # byte by byte: keep it quick
    blob = ZSTD_STREAMS[name](data)
    expected = {"threads": data * 4, "frames": b"one" + data}.get(name, data)
    pieces = inflate(Kind.ZSTD, blob, step)
    assert b"".join(pieces) == expected
    assert max(len(p) for p in pieces) <= CHUNK


def test_zstd_truncated_anywhere_is_refused() -> None:
    blob = zstd(b"hello world " * 50, write_checksum=True) + SKIPPABLE + zstd(b"again")
    frame_ends = {len(zstd(b"hello world " * 50, write_checksum=True)),
                  len(blob) - len(zstd(b"again"))}
    for cut in range(1, len(blob)):
        frames = ZstdFrames()
        frames.feed(blob[:cut])
        assert frames.complete == (cut in frame_ends), cut
        if cut in frame_ends:
            continue
        with pytest.raises(CorruptStream, match="truncated zstd"):
            inflate(Kind.ZSTD, blob[:cut], 1 << 20)


@pytest.mark.parametrize("bad", [b"garbage!", b"\x28\xb5\x2f\xfd\xff\xff\xff\xff"])
def test_zstd_garbage_is_corrupt(bad: bytes) -> None:
    with pytest.raises(CorruptStream, match="corrupt zstd"):
        inflate(Kind.ZSTD, zstd(b"fine") + bad, 1 << 20)


@pytest.mark.parametrize("step", [1, 4093, 1 << 20])
def test_gzip_round_trip_multi_member(step: int) -> None:
    data = PAYLOAD if step > 1 else PAYLOAD[:20_000]
    blob = gzip.compress(b"first") + gzip.compress(data, mtime=0) + gzip.compress(b"")
    pieces = inflate(Kind.GZIP, blob, step)
    assert b"".join(pieces) == b"first" + data
    assert max(len(p) for p in pieces) <= CHUNK


@pytest.mark.parametrize(("blob", "match"), [
    (gzip.compress(PAYLOAD)[:-1], "truncated gzip"),
    (gzip.compress(PAYLOAD)[:100], "truncated gzip"),
    (gzip.compress(PAYLOAD) + b"trailing garbage", "corrupt gzip"),
    (gzip.compress(PAYLOAD) + bytes(512), "corrupt gzip"),  # Docker refuses padding too
    (b"\x1f\x8b" + b"not a gzip header at all", "corrupt gzip"),
])
def test_gzip_truncated_or_corrupt(blob: bytes, match: str) -> None:
    with pytest.raises(CorruptStream, match=match):
        inflate(Kind.GZIP, blob, 4096)


@pytest.mark.parametrize("kind", [Kind.GZIP, Kind.ZSTD])
def test_bomb_pieces_are_bounded(kind: Kind) -> None:
    """64 MiB of zeros from a few KiB: every piece handed out is at most CHUNK."""
    size = 64 << 20
    blob = gzip.compress(bytes(size), 9) if kind is Kind.GZIP else zstd(bytes(size))
    assert len(blob) < size // 500
    sizes: list[int] = []
    inflater = Inflater(kind, lambda piece: sizes.append(len(piece)))
    inflater.feed(blob)  # all of it at once: the worst case for the old unbounded code
    inflater.finish()
    assert sum(sizes) == size and max(sizes) <= CHUNK


@pytest.mark.parametrize("kind", [Kind.GZIP, Kind.ZSTD])
def test_sink_errors_propagate_unchanged(kind: Kind) -> None:
    class Full(Exception):
        pass

    def sink(piece: bytes) -> None:
        raise Full

    blob = gzip.compress(PAYLOAD) if kind is Kind.GZIP else zstd(PAYLOAD)
    with pytest.raises(Full):
        Inflater(kind, sink).feed(blob)


def test_plain_passes_through() -> None:
    pieces = inflate(Kind.PLAIN, b"plain bytes", 4)
    assert b"".join(pieces) == b"plain bytes"


# --- archives ----------------------------------------------------------------------------------

ARCHIVE_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    # Two frames, as pzstd and appending tools write: all of them are the archive. (Checksums,
    # so that flipped bytes are seen: without one, zstd decodes whatever a block says.)
    "zstd": lambda d: zstd(d[:len(d) // 2], write_checksum=True) + zstd(d[len(d) // 2:],
                                                                    write_checksum=True),
}


@pytest.mark.parametrize("name", list(ARCHIVE_COMPRESSORS))
def test_open_archive_stream(name: str) -> None:
    blob = ARCHIVE_COMPRESSORS[name](PAYLOAD)
    assert open_archive_stream(blob[:6], io.BytesIO(blob)).read() == PAYLOAD
    with pytest.raises(CorruptStream, match="truncated"):
        open_archive_stream(blob[:6], io.BytesIO(blob[:-7])).read()
    middle = len(blob) // 2
    broken = blob[:middle] + bytes(b ^ 0x55 for b in blob[middle:middle + 64]) + \
        blob[middle + 64:]
    with pytest.raises(CorruptStream):
        open_archive_stream(broken[:6], io.BytesIO(broken)).read()


def test_open_archive_stream_plain_is_the_source() -> None:
    source = io.BytesIO(b"plain tar bytes")
    assert open_archive_stream(b"plain ", source) is source


LAYER = layer_tar({"etc/hostname": b"compressed\n", "big": bytes(1 << 20)})


@pytest.mark.parametrize("name", list(ARCHIVE_COMPRESSORS))
def test_load_compressed_archive(tmp_path: Path, name: str) -> None:
    plain = legacy_archive([LAYER])
    with stores(tmp_path / "plain") as s:
        expected = docker_archive.load(io.BytesIO(plain), s.content, s.ctx)
    with stores(tmp_path / name) as s:
        loaded = docker_archive.load(io.BytesIO(ARCHIVE_COMPRESSORS[name](plain)), s.content,
                                     s.ctx)
        assert loaded == expected and len(loaded) == 2


@pytest.mark.parametrize("name", list(ARCHIVE_COMPRESSORS))
def test_load_truncated_compressed_archive(tmp_path: Path, name: str) -> None:
    archive = ARCHIVE_COMPRESSORS[name](legacy_archive([LAYER]))
    with stores(tmp_path) as s:
        with pytest.raises(InvalidArgument):
            docker_archive.load(io.BytesIO(archive[:-9]), s.content, s.ctx)
        assert s.images.all() == [] and s.ingests() == [] and s.leases.list() == []


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_load_layer_cut_before_its_end_marker(tmp_path: Path, kind: str) -> None:
    """All of the layer's tar is there, but not the end of its compressed stream (the gzip
    trailer, the zstd checksum): Docker refuses it as an unexpected EOF, and so does load."""
    blob = gzip.compress(LAYER)[:-8] if kind == "gzip" else \
        zstd(LAYER, write_checksum=True)[:-4]
    with stores(tmp_path) as s:
        with pytest.raises(InvalidArgument, match="invalid diffID for layer 0"):
            docker_archive.load(io.BytesIO(legacy_archive([blob], diff_ids=[sha(LAYER)])),
                                s.content, s.ctx)
        assert s.images.all() == [] and s.ingests() == []
