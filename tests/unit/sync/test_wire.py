"""Framing of the sync protocol (``pydeskd.syncd.wire``, which the host imports too)."""

from __future__ import annotations

import pytest

from pydeskd.syncd import wire as host_wire


def test_frames_decode_byte_by_byte() -> None:
    frames = host_wire.encode({"t": "put", "ops": [{"o": "f"}]}, b"\0data")
    frames += host_wire.encode({"t": "barrier", "id": 3})
    reader = host_wire.FrameReader()
    out = []
    for i in range(len(frames)):  # byte by byte: partial frames wait for the rest
        out += reader.feed(frames[i:i + 1])
    assert out == [({"t": "put", "ops": [{"o": "f"}]}, b"\0data"), ({"t": "barrier", "id": 3}, b"")]
    assert reader.pending == 0


def test_bad_frames_are_errors() -> None:
    reader = host_wire.FrameReader()
    with pytest.raises(host_wire.ProtocolError):
        reader.feed(host_wire.HEAD.pack(3, 0) + b"{x}")
    with pytest.raises(host_wire.ProtocolError):
        host_wire.FrameReader().feed(host_wire.HEAD.pack(host_wire.MAX_HEADER + 1, 0))
    with pytest.raises(host_wire.ProtocolError):
        host_wire.FrameReader().feed(host_wire.encode({"no": "type"}))


def test_put_batches_pack_many_small_files_into_few_frames() -> None:
    batch = host_wire.PutBatch({"tag": "x"})
    frames: list[bytes] = []
    for i in range(5000):
        frames += batch.add({"o": "f", "p": str(i)}, b"%d" % i)
    frames += batch.flush()
    assert len(frames) == 3  # BATCH_OPS = 2000 per frame
    ops = []
    for frame in frames:
        [(header, data)] = host_wire.FrameReader().feed(frame)
        assert header["tag"] == "x"
        ops += host_wire.split_put(header, data)
    assert [data for _, data in ops] == [b"%d" % i for i in range(5000)]


def test_split_put_refuses_data_out_of_range() -> None:
    with pytest.raises(host_wire.ProtocolError):
        host_wire.split_put({"t": "put", "ops": [{"o": "f", "n": 10}]}, b"short")
