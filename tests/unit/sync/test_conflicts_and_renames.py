"""Conflict copies never replace each other, and only seen renames are sent as ``mv``
(review 7, findings 8 and 3; proofs p9_conflict_name_clash, p3_rename_pairing)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydesk.sync.engine import Engine
from pydesk.sync.ignore import IgnoreRules
from pydesk.sync.plan import GUEST, conflict_name
from pydesk.sync.resolve import resolve_conflict
from pydeskd.syncd import wire
from pydeskd.syncd.fstree import FILE, Entry, lstat_entry

T = 1_700_000_000 * 10**9


def ops(frames: list[bytes]) -> list[dict[str, Any]]:
    reader = wire.FrameReader()
    out = [op for f in frames for h, d in reader.feed(f) if h["t"] == "put"
           for op, _ in wire.split_put(h, d)]
    frames.clear()
    return out


def received(root: Path, name: str, text: str, mtime_ns: int) -> str:
    """A guest version received into a temporary file beside the path (relative to the root)."""
    temp = f".pydesk-tmp-{os.urandom(4).hex()}-{name}"
    (root / temp).write_text(text)
    os.utime(root / temp, ns=(mtime_ns, mtime_ns))
    return temp


def test_two_conflicts_in_one_second_keep_both_copies(tmp_path: Path) -> None:
    eng = Engine(str(tmp_path), IgnoreRules(), lambda frame: None)
    for n, text in enumerate(["container write #1", "container write #2"]):
        (tmp_path / "notes.txt").write_text(f"host edit {n}")  # newer: the host wins
        temp = received(tmp_path, "notes.txt", text, 1)
        resolve_conflict(eng, "notes.txt", Entry("notes.txt", FILE, len(text), 1, 0o644), temp)
    kept = {p.read_text() for p in tmp_path.iterdir() if ".pydesk-conflict-guest-" in p.name}
    assert kept == {"container write #1", "container write #2"}
    assert (tmp_path / "notes.txt").read_text() == "host edit 1"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pydesk-tmp-")]


def test_the_host_version_moved_aside_takes_a_free_name(tmp_path: Path) -> None:
    sent: list[bytes] = []
    eng = Engine(str(tmp_path), IgnoreRules(), sent.append)
    for n in range(3):
        (tmp_path / "f").write_text(f"host {n}")
        os.utime(tmp_path / "f", ns=(T, T))
        temp = received(tmp_path, "f", f"guest {n}", T + 10)  # newer: the guest wins
        resolve_conflict(eng, "f", Entry("f", FILE, 7, T + 10, 0o644), temp)
    eng.flush()
    kept = sorted(p.read_text() for p in tmp_path.iterdir()
                  if ".pydesk-conflict-host-" in p.name)
    assert kept == ["host 0", "host 1", "host 2"]
    assert (tmp_path / "f").read_text() == "guest 2"
    pushed = {op["e"][0] for op in ops(sent) if op["o"] == FILE}
    assert len(pushed) == 3  # each copy under its own name in the guest too


def test_conflict_names_count_up_within_a_second() -> None:
    assert conflict_name("d/x", GUEST, now=0, n=1) == "d/x.pydesk-conflict-guest-19700101T000000Z"
    assert conflict_name("d/x", GUEST, now=0, n=2) == \
        "d/x.pydesk-conflict-guest-19700101T000000Z-2"


def test_a_delete_and_a_look_alike_create_are_not_a_rename(tmp_path: Path) -> None:
    """p3 on the host: ``rm a.txt; tar x b.txt`` (same size, mtime, mode) sends b's bytes."""
    for name, text in (("a.txt", "AAAAA"), ("b.txt", "BBBBB")):
        (tmp_path / name).write_text(text)
        os.utime(tmp_path / name, ns=(T, T))
    a = lstat_entry(str(tmp_path), "a.txt")
    assert a is not None
    sent: list[bytes] = []
    eng = Engine(str(tmp_path), IgnoreRules(), sent.append, {"a.txt": a})
    os.unlink(tmp_path / "a.txt")
    eng.host_batch(["a.txt", "b.txt"])
    eng.flush()
    frames = b"".join(sent)
    got = ops(sent)
    assert [op["o"] for op in got] == [FILE, "rm"] or [op["o"] for op in got] == ["rm", FILE]
    assert b"BBBBB" in frames and eng.stats.renamed == 0


def test_a_guest_delete_and_look_alike_create_fetch_the_content(tmp_path: Path) -> None:
    """p3 in the guest: ``rm c.txt; cp -p d.txt .``: d is fetched, not c renamed to it."""
    (tmp_path / "c.txt").write_text("CCCCC")
    os.utime(tmp_path / "c.txt", ns=(T, T))
    c = lstat_entry(str(tmp_path), "c.txt")
    assert c is not None
    sent: list[bytes] = []
    eng = Engine(str(tmp_path), IgnoreRules(), sent.append, {"c.txt": c})
    eng.guest_changed([("c.txt", None), ("d.txt", c._replace(path="d.txt"))])
    [(get, _)] = wire.FrameReader().feed(b"".join(sent))
    assert get["t"] == "get" and get["paths"] == ["d.txt"]
    assert not (tmp_path / "c.txt").exists() and not (tmp_path / "d.txt").exists()
    assert eng.stats.renamed == 0


def test_a_seen_move_of_a_changed_file_sends_the_content(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("v1")
    os.utime(tmp_path / "old", ns=(T, T))
    old = lstat_entry(str(tmp_path), "old")
    assert old is not None
    sent: list[bytes] = []
    eng = Engine(str(tmp_path), IgnoreRules(), sent.append, {"old": old})
    os.rename(tmp_path / "old", tmp_path / "new")
    eng.moves.add("old", "new")
    (tmp_path / "new").write_text("v2 longer")  # edited right after the move
    eng.host_batch(["old", "new"])
    eng.flush()
    assert sorted(op["o"] for op in ops(sent)) == [FILE, "rm"] and eng.stats.renamed == 0
