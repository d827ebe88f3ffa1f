"""Framing: both copies (host pydesk.sync.wire, guest pydeskd.syncd.wire) speak the same bytes."""

from __future__ import annotations

import pytest

from pydesk.sync import wire as host_wire
from pydeskd.syncd import wire as guest_wire


@pytest.mark.parametrize(("enc", "dec"), [(host_wire, guest_wire), (guest_wire, host_wire)])
def test_each_side_decodes_the_other(enc: object, dec: object) -> None:
    frames = enc.encode({"t": "put", "ops": [{"o": "f"}]}, b"\0data")  # type: ignore[attr-defined]
    frames += enc.encode({"t": "barrier", "id": 3})  # type: ignore[attr-defined]
    reader = dec.FrameReader()  # type: ignore[attr-defined]
    out = []
    for i in range(len(frames)):  # byte by byte: partial frames wait for the rest
        out += reader.feed(frames[i:i + 1])
    assert out == [({"t": "put", "ops": [{"o": "f"}]}, b"\0data"), ({"t": "barrier", "id": 3}, b"")]
    assert reader.pending == 0


def test_copies_are_identical_but_for_the_docstring() -> None:
    import inspect
    host = inspect.getsource(host_wire).split('"""', 2)[2]
    guest = inspect.getsource(guest_wire).split('"""', 2)[2]
    assert host == guest


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
