"""The json-file reader against logs written by the shim's own writer (rotation included)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pydeskd.daemon.logs import LogOptions, format_timestamp, log_files, read_logs
from pydeskd.shim.jsonlog import JsonFileLog

BASE = 1_700_000_000 * 1_000_000_000


def write(log: JsonFileLog, n: int, stream: str = "stdout") -> None:
    log.write(stream, f"line {n}\n".encode(), ns=BASE + n * 1_000_000_000)


def texts(path: Path, **kw: object) -> list[str]:
    opts = LogOptions(**kw)  # type: ignore[arg-type]
    return [e.data.decode() for e in read_logs(path, opts)]


def test_streams_tail_since_until(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path)
    for n in range(6):
        write(log, n, "stderr" if n % 2 else "stdout")
    log.close()
    assert texts(path) == [f"line {n}\n" for n in range(6)]
    assert texts(path, stderr=False) == ["line 0\n", "line 2\n", "line 4\n"]
    assert texts(path, stdout=False) == ["line 1\n", "line 3\n", "line 5\n"]
    assert texts(path, tail=2) == ["line 4\n", "line 5\n"]
    assert texts(path, tail=0) == []
    assert texts(path, since_ns=BASE + 4 * 1_000_000_000) == ["line 4\n", "line 5\n"]
    assert texts(path, until_ns=BASE + 1_000_000_000) == ["line 0\n", "line 1\n"]
    stamped = texts(path, timestamps=True, tail=1)
    assert stamped == [format_timestamp(BASE + 5 * 1_000_000_000) + " line 5\n"]
    assert stamped[0].startswith("2023-11-14T22:13:25.000000000Z ")


def test_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path, max_size=100, max_files=3)
    for n in range(6):
        write(log, n)
    log.close()
    assert [p.name for p in log_files(path)] == ["c-json.log.2", "c-json.log.1", "c-json.log"]
    # max_files=3 keeps the newest lines only; what is kept reads in order.
    got = texts(path)
    assert got == sorted(got, key=lambda t: int(t.split()[1])) and got[-1] == "line 5\n"
    assert texts(path, tail=3) == got[-3:]


def test_follow_until_the_container_stops(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path, max_size=120, max_files=2)
    write(log, 0)
    running = threading.Event()
    running.set()
    seen: list[str] = []

    def reader() -> None:
        for entry in read_logs(path, LogOptions(follow=True), running=running.is_set):
            seen.append(entry.data.decode())

    t = threading.Thread(target=reader)
    t.start()
    for n in range(1, 5):  # these rotate the file under the follower
        time.sleep(0.1)
        write(log, n)
    time.sleep(0.2)
    running.clear()
    t.join(5)
    log.close()
    assert not t.is_alive()
    assert seen == [f"line {n}\n" for n in range(5)]


def test_follow_stops_on_request(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    JsonFileLog(path).close()
    stop = threading.Event()
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.extend(
        e.data for e in read_logs(path, LogOptions(follow=True), lambda: True, stop)))
    t.start()
    time.sleep(0.1)
    stop.set()
    t.join(5)
    assert not t.is_alive() and out == []
