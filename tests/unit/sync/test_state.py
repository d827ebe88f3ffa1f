"""The agreed state on disk: round trip, atomic write, foreign or broken files ignored."""

from __future__ import annotations

from pathlib import Path

from pydesk.sync.state import StateFile, read_root
from pydeskd.syncd.fstree import FILE, Entry


def test_round_trip_and_root_check(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s/k.json", "/src", "one.conf")
    agreed = {"a": Entry("a", FILE, 1, 2, 0o644)}
    sf.save(agreed)
    assert sf.load() == agreed
    assert read_root(sf.path) == ("/src", "one.conf")
    assert StateFile(sf.path, "/other").load() == {}  # another root's file: no agreed state
    assert [p.name for p in sf.path.parent.iterdir()] == ["k.json"]  # no temp left


def test_broken_or_missing_files_mean_no_state(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    assert StateFile(tmp_path / "bad.json", "/src").load() == {}
    assert read_root(tmp_path / "bad.json") is None
    assert StateFile(tmp_path / "missing.json", "/src").load() == {}
