"""A hostile or confused guest cannot reach host files outside the synced root, and one bad
path never fails the session (review 7, findings 1 and 7; proof p1_sync_symlink_escape)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pydesk.sync.engine import Engine
from pydesk.sync.ignore import IgnoreRules
from pydesk.sync.plan import initial_plan
from pydeskd.syncd import wire
from pydeskd.syncd.fstree import DIR, FILE, LINK, Entry, lstat_entry

SECRET = b"TOP-SECRET-KEY"


class Outside:
    """A directory beside the root that no sync may read or change: ``home/.ssh/id_rsa``."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        (self.home / ".ssh").mkdir(parents=True)
        os.chmod(self.home / ".ssh", 0o700)
        (self.home / ".ssh/id_rsa").write_bytes(SECRET)
        os.chmod(self.home / ".ssh/id_rsa", 0o600)
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, bytes]]:
        out = {}
        for p in sorted(self.home.rglob("*")):
            st = p.lstat()
            out[str(p.relative_to(self.home))] = (
                st.st_mode, p.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
        return out

    def untouched(self) -> bool:
        return self.snapshot() == self.before


def put(ops: list[dict[str, Any]], data: bytes = b"") -> tuple[dict[str, Any], bytes]:
    [(h, d)] = wire.FrameReader().feed(wire.encode({"t": "put", "tag": "x", "ops": ops}, data))
    return h, d


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Engine, list[bytes], Outside, Path]:
    outside = Outside(tmp_path)
    root = tmp_path / "site"
    root.mkdir()
    sent: list[bytes] = []
    return Engine(str(root), IgnoreRules(), sent.append), sent, outside, root


def test_a_synced_symlink_never_leads_the_host_outside_the_root(
        setup: tuple[Engine, list[bytes], Outside, Path]) -> None:
    eng, sent, outside, root = setup
    # the guest makes evil -> the outside dir (links are synced as links, never followed)
    eng.guest_changed([("evil", Entry("evil", LINK, target=str(outside.home)))])
    assert os.readlink(root / "evil") == str(outside.home)
    # a file "changed" under the link, answered by rm: the host must not read the outside file
    eng.guest_changed([("evil/.ssh/id_rsa", Entry("evil/.ssh/id_rsa", FILE, 1, 1, 0o644))])
    eng.received(*put([{"o": "rm", "p": "evil/.ssh/id_rsa"}]))
    assert SECRET not in b"".join(sent)
    assert "evil/.ssh/id_rsa" not in eng.agreed
    # chmod through the link: refused
    eng.guest_changed([("evil/.ssh", Entry("evil/.ssh", DIR, mode=0o700))])
    eng.guest_changed([("evil/.ssh", Entry("evil/.ssh", DIR, mode=0o777))])
    # a deletion, a file's content, a link over it, a rename onto and out of the link
    eng.guest_changed([("evil/.ssh/id_rsa", None)])
    eng.received(*put([{"o": "l", "e": ["evil/.ssh/id_rsa", "l", 0, 2**62, 0, "x"]}]))
    data = b"planted"
    eng.received(*put([{"o": "f", "e": ["evil/.ssh/authorized_keys", "f", len(data), 1, 0o644,
                                        ""], "off": 0, "fin": True, "n": len(data)}], data))
    (root / "mine").write_text("m")
    os.utime(root / "mine", ns=(1, 1))
    mine = lstat_entry(str(root), "mine")
    assert mine is not None
    eng.agreed["mine"] = mine
    eng.guest_changed([("mine", None), ("evil/mine", mine._replace(path="evil/mine"))],
                      moves={"evil/mine": "mine"})  # the rename is refused: a delete, a pull
    eng.received(*put([{"o": "f", "e": ["evil/mine", "f", 1, 1, mine.mode, ""], "off": 0,
                        "fin": True, "n": 1}], b"m"))
    assert outside.untouched()
    assert SECRET not in b"".join(sent)
    assert eng.stats.skipped >= 3 and "evil/" in eng.stats.last_error
    assert not eng.busy


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../x", "a//b", "", "."])
def test_unsafe_guest_paths_are_skipped_and_reported_never_fatal(
        setup: tuple[Engine, list[bytes], Outside, Path], bad: str) -> None:
    eng, _sent, outside, root = setup
    eng.guest_changed([(bad, Entry(bad, DIR, mode=0o777)), (bad, None),
                       ("ok", Entry("ok", DIR, mode=0o755))])
    assert (root / "ok").is_dir()  # the good path of the same batch went through
    eng.rejected(bad, None)
    eng.received(*put([{"o": "rm", "p": bad}, {"o": "d", "e": [bad, "d", 0, 0, 0o777, ""]},
                       {"o": "f", "e": [bad, "f", 1, 1, 0o644, ""], "off": 0, "fin": True,
                        "n": 1}], b"x"))
    # the guest's manifest at the first sync
    guest = {bad: Entry(bad, FILE, 1, 1, 0o644),
             bad + "/d": Entry(bad + "/d", DIR, mode=0o777)}
    eng.start(initial_plan({}, guest, {}), {}, guest)
    assert not eng.busy  # nothing waits for an answer about a path never asked for
    assert eng.stats.skipped >= 4
    assert outside.untouched() and sorted(p.name for p in root.iterdir()) == ["ok"]


def test_a_file_under_a_host_symlink_is_absent_and_its_pull_is_dropped(
        setup: tuple[Engine, list[bytes], Outside, Path]) -> None:
    eng, sent, outside, root = setup
    os.symlink(str(outside.home), root / "lib")  # the user's own link: synced as a link
    # the guest still has lib/ as a directory with a file in it (p5's situation)
    eng.guest_changed([("lib/x.log", Entry("lib/x.log", FILE, 3, 1, 0o644))])
    [(get, _)] = wire.FrameReader().feed(b"".join(sent))
    assert get["t"] == "get" and get["paths"] == ["lib/x.log"]
    eng.received(*put([{"o": "f", "e": ["lib/x.log", "f", 3, 1, 0o644, ""], "off": 0,
                        "fin": True, "n": 3}], b"log"))
    assert outside.untouched() and not eng.busy
    assert eng.stats.skipped == 1 and "lib/x.log" not in eng.agreed
    assert [p.name for p in root.iterdir()] == ["lib"]  # no temporary file left behind


def test_a_path_deeper_than_the_recursion_limit_is_no_crash(
        setup: tuple[Engine, list[bytes], Outside, Path]) -> None:
    eng, _sent, _outside, root = setup
    deep = "/".join(["a"] * 1200)  # every level resolved in a loop, none by recursion
    try:
        eng.guest_changed([(deep, Entry(deep, DIR, mode=0o755)),
                           ("ok", Entry("ok", DIR, mode=0o755))])
        assert (root / "ok").is_dir() and not eng.busy
        assert lstat_entry(str(root), deep) is not None
    finally:
        remove_chain(root)


def remove_chain(top: Path) -> None:
    """Removes top/a/a/.../a without recursion (shutil.rmtree recurses once per level):
    the chain moves up one level per step."""
    while (top / "a").is_dir():
        os.rename(top / "a", top / "x")
        if (top / "x/a").is_dir():
            os.rename(top / "x/a", top / "a")
        os.rmdir(top / "x")
