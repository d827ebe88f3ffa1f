"""The control protocol: request/reply encoding, validation, and Docker's attach framing."""

from __future__ import annotations

import json
import struct

import pytest

from pydeskd.shim import protocol as p


@pytest.mark.parametrize("request_", [
    p.StateRequest(), p.StartRequest("e1"), p.WaitRequest(None),
    p.KillRequest("e1", signal=9, all=True), p.ResizeRequest(None, width=132, height=50),
    p.AttachRequest(None, stdin=True), p.DeleteRequest("e1"), p.EventsRequest(),
    p.ExecRequest("e1", process={"args": ["sh"]}, tty=True, stdin=True),
])
def test_requests_round_trip(request_: p.Request) -> None:
    line = p.encode_request(request_)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert p.decode_request(line) == request_


def test_request_wire_format_is_documented_json() -> None:
    line = p.encode_request(p.KillRequest("e1", signal=15))
    assert json.loads(line) == {"method": "kill", "exec_id": "e1", "signal": 15, "all": False}
    # Absent fields take their defaults.
    assert p.decode_request(b'{"method":"kill"}\n') == p.KillRequest(None, signal=15)


@pytest.mark.parametrize("line, message", [
    (b"not json\n", "not JSON"),
    (b"[1]\n", "not a JSON object"),
    (b'{"method":"fly"}\n', "unknown method"),
    (b'{"method":"state","pid":1}\n', "unknown field"),
    (b'{"method":"kill","signal":"TERM"}\n', "signal must be int"),
    (b'{"method":"kill","signal":true}\n', "signal must be int"),
    (b'{"method":"kill","signal":99}\n', "1..64"),
    (b'{"method":"attach","stdin":1}\n', "stdin must be bool"),
    (b'{"method":"resize","width":0,"height":10}\n', "1..65535"),
    (b'{"method":"exec","process":{}}\n', "exec_id is required"),
    (b'{"method":"state","exec_id":"../x"}\n', "invalid exec id"),
])
def test_bad_requests_are_rejected(line: bytes, message: str) -> None:
    with pytest.raises(p.ProtocolError, match=message):
        p.decode_request(line)


def test_replies() -> None:
    assert p.decode_reply(p.encode_ok({"tty": True})) == {"tty": True}
    assert p.decode_reply(p.encode_ok()) == {}
    with pytest.raises(p.ShimError) as err:
        p.decode_reply(p.encode_error(p.ErrorKind.CONFLICT, "it is running"))
    assert err.value.kind is p.ErrorKind.CONFLICT and err.value.message == "it is running"
    with pytest.raises(p.ShimError) as err:  # an unknown kind from a newer shim: FAILED
        p.decode_reply(b'{"ok":false,"error":{"kind":"weird","message":"m"}}\n')
    assert err.value.kind is p.ErrorKind.FAILED
    with pytest.raises(p.ProtocolError):
        p.decode_reply(b'{"ok":true}\n')


def test_process_state_and_event_from_dict() -> None:
    state = p.ProcessState.from_dict({"id": "c", "exec_id": None, "status": "stopped", "pid": 7,
                                      "tty": False, "exit_code": 137, "exited_at": "t"})
    assert state.status is p.Status.STOPPED and state.exit_code == 137
    with pytest.raises(p.ProtocolError):
        p.ProcessState.from_dict({"id": "c", "status": "zombie", "pid": 1})
    event = p.Event.from_dict({"type": "exit", "time": "t", "exit_code": 3})
    assert event == p.Event(p.EventType.EXIT, "t", None, 3)


def test_status_order_is_the_documented_life() -> None:
    assert [s.value for s in p.Status] == ["created", "running", "stopped", "deleted"]
    init_events = [p.EventType.CREATE, p.EventType.START, p.EventType.EXIT, p.EventType.DELETE]
    assert list(p.EventType)[:4] == init_events


def test_frame_is_dockers_header() -> None:
    data = p.frame(p.Stream.STDERR, b"hello")
    assert data[:8] == bytes([2, 0, 0, 0]) + struct.pack(">I", 5)
    assert data[8:] == b"hello"
    assert p.frame(p.Stream.STDOUT, b"") == bytes([1, 0, 0, 0, 0, 0, 0, 0])


def test_frame_decoder_reassembles_split_frames() -> None:
    stream = (p.frame(p.Stream.STDOUT, b"out") + p.frame(p.Stream.STDERR, b"x" * 70000)
              + p.frame(p.Stream.STDOUT, b"end"))
    decoder = p.FrameDecoder()
    frames: list[tuple[p.Stream, bytes]] = []
    for i in range(0, len(stream), 7):  # byte-dribbled, headers split too
        frames += decoder.feed(stream[i:i + 7])
    assert frames == [(p.Stream.STDOUT, b"out"), (p.Stream.STDERR, b"x" * 70000),
                      (p.Stream.STDOUT, b"end")]
    assert decoder.pending == 0
    assert decoder.feed(p.frame(p.Stream.STDOUT, b"abc")[:5]) == []
    assert decoder.pending == 5


def test_frame_decoder_rejects_bad_stream_id() -> None:
    with pytest.raises(p.ProtocolError):
        p.FrameDecoder().feed(bytes([9, 0, 0, 0, 0, 0, 0, 1]) + b"x")
