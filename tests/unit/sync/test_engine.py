"""The host engine's decisions on a temp dir, with the messages it sends captured (no guest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydesk.sync.engine import Engine
from pydesk.sync.ignore import IgnoreRules
from pydeskd.syncd import wire
from pydeskd.syncd.fstree import FILE, Entry, lstat_entry


class Capture:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, frame: bytes) -> None:
        self.frames.append(frame)

    def messages(self) -> list[tuple[dict[str, Any], bytes]]:
        reader = wire.FrameReader()
        out = [m for f in self.frames for m in reader.feed(f)]
        self.frames.clear()
        return out

    def ops(self) -> list[dict[str, Any]]:
        return [op for h, d in self.messages() if h["t"] == "put"
                for op, _ in wire.split_put(h, d)]


def engine(root: Path, **agreed: Entry) -> tuple[Engine, Capture]:
    cap = Capture()
    return Engine(str(root), IgnoreRules.from_lines(["*.log"]), cap, dict(agreed)), cap


def write(path: Path, text: str, mtime_ns: int) -> Entry:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    entry = lstat_entry(str(path.parent), path.name)
    assert entry is not None
    return entry


def put_msg(entry: Entry, data: bytes, tag: str = "pull") -> tuple[dict[str, Any], bytes]:
    [(h, d)] = wire.FrameReader().feed(wire.encode(
        {"t": "put", "tag": tag, "ops": [{"o": FILE, "e": entry.wire(), "off": 0, "fin": True,
                                          "n": len(data)}]}, data))
    return h, d


def busy(eng: Engine) -> bool:
    return eng.busy  # a call: mypy would narrow the property across the test's steps


def test_echoes_of_agreed_state_send_nothing(tmp_path: Path) -> None:
    a = write(tmp_path / "f", "same", 10**18)
    eng, cap = engine(tmp_path, f=a)
    eng.host_changed("f")  # a watcher event for our own apply
    eng.guest_changed([("f", a)])  # the guest reporting what we sent it
    eng.flush()
    assert cap.messages() == []


def test_host_edit_is_pushed_with_the_agreed_entry_as_expectation(tmp_path: Path) -> None:
    a = write(tmp_path / "f", "v1", 10**18)
    eng, cap = engine(tmp_path, f=a)
    b = write(tmp_path / "f", "v2!", 10**18 + 5)
    eng.host_changed("f")
    eng.flush()
    [op] = cap.ops()
    assert op["e"] == b.wire() and op["x"] == a.wire() and op["fin"]
    assert eng.agreed["f"] == b


def test_ignored_paths_are_not_synced_either_way(tmp_path: Path) -> None:
    eng, cap = engine(tmp_path)
    write(tmp_path / "x.log", "noise", 1)
    eng.host_changed("x.log")
    eng.guest_changed([("y.log", Entry("y.log", FILE, 1, 1, 0o644))])
    eng.flush()
    assert cap.messages() == []


def test_guest_edit_is_pulled_then_applied(tmp_path: Path) -> None:
    a = write(tmp_path / "f", "v1", 10**18)
    eng, cap = engine(tmp_path, f=a)
    g = Entry("f", FILE, 5, 10**18 + 7, 0o640)
    eng.guest_changed([("f", g)])
    [(get, _)] = cap.messages()
    assert get == {"t": "get", "paths": ["f"], "tag": "pull"}
    eng.received(*put_msg(g, b"guest"))
    assert (tmp_path / "f").read_text() == "guest" and eng.agreed["f"] == g
    assert not eng.busy


def test_both_changed_newer_host_wins_and_guest_version_is_kept(tmp_path: Path) -> None:
    a = write(tmp_path / "f", "v1", 10**18)
    eng, cap = engine(tmp_path, f=a)
    h = write(tmp_path / "f", "host edit", 10**18 + 100)
    g = Entry("f", FILE, 10, 10**18 + 50, 0o644)  # older than the host's edit
    eng.guest_changed([("f", g)])
    [(get, _)] = cap.messages()
    assert get["tag"] == "conflict"
    eng.received(*put_msg(g, b"guest edit", "conflict"))
    [kept] = [p for p in tmp_path.iterdir() if ".pydesk-conflict-guest-" in p.name]
    assert kept.read_text() == "guest edit" and (tmp_path / "f").read_text() == "host edit"
    ops = cap.ops()
    assert ops[0] == {"o": "mv", "p": "f", "to": kept.name, "x": g.wire()}
    assert ops[1]["e"] == h.wire() and ops[1]["x"] is None
    assert eng.stats.conflicts == 1


def test_both_changed_newer_guest_wins_and_host_version_is_kept(tmp_path: Path) -> None:
    a = write(tmp_path / "f", "v1", 10**18)
    eng, cap = engine(tmp_path, f=a)
    write(tmp_path / "f", "host edit", 10**18 + 50)
    g = Entry("f", FILE, 10, 10**18 + 100, 0o644)
    eng.guest_changed([("f", g)])
    cap.messages()
    eng.received(*put_msg(g, b"guest edit", "conflict"))
    [kept] = [p for p in tmp_path.iterdir() if ".pydesk-conflict-host-" in p.name]
    assert kept.read_text() == "host edit" and (tmp_path / "f").read_text() == "guest edit"
    [op] = cap.ops()  # the host's version goes to the guest beside the winner
    assert op["e"][0] == kept.name and op["x"] is None


def test_a_guest_rejection_becomes_a_conflict_resolution(tmp_path: Path) -> None:
    write(tmp_path / "f", "mine", 10**18 + 100)
    eng, cap = engine(tmp_path)
    eng.host_changed("f")
    eng.flush()
    cap.messages()
    g = Entry("f", FILE, 6, 10**18, 0o644)
    eng.rejected("f", g)  # the guest had its own f
    [(get, _)] = cap.messages()
    assert get["tag"] == "conflict"
    assert busy(eng)
    eng.received(*put_msg(g, b"theirs", "conflict"))
    assert not busy(eng)
    assert {p.read_text() for p in tmp_path.iterdir()} == {"mine", "theirs"}


def test_guest_delete_of_a_file_changed_here_sends_it_back(tmp_path: Path) -> None:
    a = write(tmp_path / "f", "v1", 10**18)
    eng, cap = engine(tmp_path, f=a)
    write(tmp_path / "f", "edited", 10**18 + 1)
    eng.guest_changed([("f", None)])  # host changed too: a conflict, resolved by fetching
    [(get, _)] = cap.messages()
    assert get["tag"] == "conflict"
    [(rm, d)] = wire.FrameReader().feed(wire.encode(
        {"t": "put", "tag": "conflict", "ops": [{"o": "rm", "p": "f"}]}))
    eng.received(rm, d)
    assert (tmp_path / "f").read_text() == "edited"
    [op] = cap.ops()
    assert op["o"] == FILE and op["x"] is None


def test_big_files_stream_in_pieces_final_last(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom((2 << 20) + 5))
    eng, cap = engine(tmp_path)
    eng.host_changed("big")
    eng.flush()
    ops = cap.ops()
    assert [(op["off"], op["fin"]) for op in ops] == [(0, False), (1 << 20, False),
                                                      (2 << 20, True)]
    assert "new" not in ops[-1]


def test_a_host_rename_is_one_mv_without_content(tmp_path: Path) -> None:
    a = write(tmp_path / "old", "content" * 1000, 10**18)
    eng, cap = engine(tmp_path, old=a)
    os.rename(tmp_path / "old", tmp_path / "new")
    eng.moves.add("old", "new")  # what the watcher notes for watchdog's moved event
    eng.host_batch(["old", "new"])
    eng.flush()
    [op] = cap.ops()
    assert op == {"o": "mv", "p": "old", "to": "new", "x": a.wire()}
    assert eng.agreed["new"] == a._replace(path="new") and "old" not in eng.agreed
    # the guest refused (it changed "old" meanwhile): "new" gets the content, "old" resolves
    eng.rejected("old", Entry("old", FILE, 1, 1, 0o644))
    msgs = cap.messages()
    assert [h["t"] for h, _ in msgs] == ["put", "get"]


def test_a_guest_rename_is_applied_here_without_fetching(tmp_path: Path) -> None:
    a = write(tmp_path / "old", "content", 10**18)
    eng, cap = engine(tmp_path, old=a)
    eng.guest_changed([("old", None), ("sub/new", a._replace(path="sub/new"))],
                      moves={"sub/new": "old"})
    assert cap.messages() == []
    assert (tmp_path / "sub/new").read_text() == "content" and not (tmp_path / "old").exists()
    assert eng.stats.renamed == 1
