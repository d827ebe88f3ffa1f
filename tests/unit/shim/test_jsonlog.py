"""The json-file log: Docker's entry format, partial lines at 16 KiB, timestamps, rotation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pydeskd.shim import jsonlog
from pydeskd.shim.jsonlog import MAX_LINE, JsonFileLog, LineSplitter, encode_entry, rfc3339nano

T0 = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z


def _entries(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rfc3339nano_trims_like_go() -> None:
    assert rfc3339nano(T0) == "2023-11-14T22:13:20Z"
    assert rfc3339nano(T0 + 123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339nano(T0 + 120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339nano(T0 + 1) == "2023-11-14T22:13:20.000000001Z"


def test_entry_format_matches_docker() -> None:
    line = encode_entry("stdout", b"a <b> & c\n", T0 + 5)
    assert line == (b'{"log":"a \\u003cb\\u003e \\u0026 c\\n","stream":"stdout",'
                    b'"time":"2023-11-14T22:13:20.000000005Z"}\n')
    # Non-ASCII stays UTF-8; invalid bytes become U+FFFD, as Go's encoder does.
    assert json.loads(encode_entry("stderr", "é\n".encode(), T0))["log"] == "é\n"
    assert json.loads(encode_entry("stderr", b"\xff\n", T0))["log"] == "\ufffd\n"


def test_splitter_lines_partials_and_eof() -> None:
    s = LineSplitter()
    assert s.feed(b"one\ntw") == [(b"one\n", False)]
    assert s.feed(b"o\nthree") == [(b"two\n", False)]
    assert s.finish() == [(b"three", True)]
    assert s.finish() == []


def test_splitter_cuts_long_lines_at_16k() -> None:
    s = LineSplitter()
    long = b"x" * (MAX_LINE * 2 + 10) + b"\n"
    out = s.feed(long)
    assert out == [(b"x" * MAX_LINE, True), (b"x" * MAX_LINE, True), (b"x" * 10 + b"\n", False)]
    # A newline right at the limit belongs to a complete line of 16 KiB + 1.
    s2 = LineSplitter()
    assert s2.feed(b"y" * (MAX_LINE - 1) + b"\n") == [(b"y" * (MAX_LINE - 1) + b"\n", False)]


def test_log_writes_streams_separately(tmp_path: Path) -> None:
    log = JsonFileLog(tmp_path / "c.log")
    log.write("stdout", b"hel", T0)
    log.write("stderr", b"oops\n", T0 + 1)
    log.write("stdout", b"lo\n", T0 + 2)
    log.write("stdout", b"tail", T0 + 3)
    log.finish("stdout", T0 + 4)
    log.finish("stderr", T0 + 5)
    log.close()
    assert _entries(tmp_path / "c.log") == [
        {"log": "oops\n", "stream": "stderr", "time": "2023-11-14T22:13:20.000000001Z"},
        {"log": "hello\n", "stream": "stdout", "time": "2023-11-14T22:13:20.000000002Z"},
        {"log": "tail", "stream": "stdout", "time": "2023-11-14T22:13:20.000000004Z"},
    ]


def test_log_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(encode_entry("stdout", b"old\n", T0))
    log = JsonFileLog(path)
    log.write("stdout", b"new\n", T0)
    log.close()
    assert [e["log"] for e in _entries(path)] == ["old\n", "new\n"]


def test_rotation_keeps_max_files(tmp_path: Path) -> None:
    path = tmp_path / "container.log"
    entry = len(encode_entry("stdout", b"line 00\n", T0))
    log = JsonFileLog(path, max_size=entry * 3, max_files=3)
    for i in range(20):
        log.write("stdout", f"line {i:02d}\n".encode(), T0)
    log.close()
    files = [path.with_name("container.log.2"), path.with_name("container.log.1"), path]
    assert not path.with_name("container.log.3").exists()
    kept = [e["log"] for f in files for e in _entries(f)]
    # Rotated when a file reached the cap, as Docker does: 3 entries per file.
    assert kept == [f"line {i:02d}\n" for i in range(12, 20)]
    assert [len(_entries(f)) for f in files] == [3, 3, 2]


def test_rotation_with_one_file_truncates(tmp_path: Path) -> None:
    path = tmp_path / "container.log"
    entry = len(encode_entry("stdout", b"line 00\n", T0))
    log = JsonFileLog(path, max_size=entry * 2, max_files=1)
    for i in range(5):
        log.write("stdout", f"line {i:02d}\n".encode(), T0)
    log.close()
    assert [e["log"] for e in _entries(path)] == ["line 04\n"]
    assert list(tmp_path.iterdir()) == [path]


def test_bad_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        JsonFileLog(tmp_path / "x.log", max_size=-1)
    with pytest.raises(ValueError):
        JsonFileLog(tmp_path / "x.log", max_files=0)


def test_a_failed_rotation_keeps_writing_to_the_old_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "container.log"
    entry = len(encode_entry("stdout", b"line 00\n", T0))
    log = JsonFileLog(path, max_size=entry * 2, max_files=2)
    log.write("stdout", b"line 00\nline 01\n", T0)
    real_open = os.open

    def failing_open(*args: object, **kwargs: object) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(jsonlog.os, "open", failing_open)
    with pytest.raises(OSError):
        log.write("stdout", b"line 02\n", T0)  # rotation due: the new file cannot be opened
    monkeypatch.setattr(jsonlog.os, "open", real_open)
    log.write("stdout", b"line 03\n", T0)  # rotates now, and writes: no EBADF
    log.close()
    assert [e["log"] for e in _entries(path)] == ["line 03\n"]
    assert [e["log"] for e in _entries(path.with_name("container.log.1"))] == [
        "line 00\n", "line 01\n"]
