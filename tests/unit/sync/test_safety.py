"""The first sync's guards: which agreed state is trusted, and mass host deletions refused."""

from __future__ import annotations

from pathlib import Path

from pydesk.sync.plan import initial_plan
from pydesk.sync.safety import MASS_DELETE_MIN, spare_host_deletions, trusted_base
from pydesk.sync.state import Saved, StateFile
from pydeskd.syncd.fstree import DIR, FILE, Entry


def f(path: str, mtime: int = 1) -> Entry:
    return Entry(path, FILE, 1, mtime, 0o644)


def test_the_base_is_trusted_only_for_the_same_copy_at_its_generation_or_newer() -> None:
    saved = Saved({"a": f("a")}, "c0ffee" * 4, 5)
    assert trusted_base(saved, "c0ffee" * 4, 5) == {"a": f("a")}
    assert trusted_base(saved, "c0ffee" * 4, 6) == {"a": f("a")}  # host died before its save
    assert trusted_base(saved, "c0ffee" * 4, 4) == {}  # the guest lost acknowledged writes
    assert trusted_base(saved, "another" * 4, 5) == {}  # removed and made again
    assert trusted_base(Saved({"a": f("a")}), "", 0) == {}  # no identity known: never


def test_without_a_base_nothing_is_deleted_and_differences_are_conflicts() -> None:
    host = {"kept": f("kept"), "both": f("both", 2)}
    guest = {"both": f("both", 3), "new-in-guest": f("new-in-guest")}
    base = trusted_base(Saved(dict(host)), "x" * 32, 0)
    plan = initial_plan(host, guest, base)
    assert not plan.delete_host and not plan.delete_guest
    assert [e.path for e in plan.push] == ["kept"]
    assert [e.path for e in plan.pull] == ["new-in-guest"]
    assert [h.path for h, _ in plan.conflicts] == ["both"]


def test_many_host_deletions_are_pushed_back_instead() -> None:
    host = {"d": Entry("d", DIR, 0, 1, 0o755)}
    host |= {f"d/f{i:03d}": f(f"d/f{i:03d}") for i in range(100)}
    host["z"] = f("z")
    guest = {"z": f("z", 9)}  # the guest lacks d/ entirely, changed z
    plan = initial_plan(host, guest, dict(host))
    assert len(plan.delete_host) == 101
    spared = spare_host_deletions(plan, len(host))
    assert len(spared) == 101 and not plan.delete_host
    assert [e.path for e in plan.push][:2] == ["d", "d/f000"]  # the directory first
    assert [e.path for e in plan.pull] == ["z"]  # the rest of the plan is untouched


def test_a_few_deletions_or_a_small_share_go_through() -> None:
    host = {f"f{i}": f(f"f{i}") for i in range(1000)}
    guest = dict(host)
    for i in range(MASS_DELETE_MIN + 10):  # more than the minimum, but 6 % of the tree
        del guest[f"f{i}"]
    plan = initial_plan(host, guest, dict(host))
    assert spare_host_deletions(plan, len(host)) == []
    assert len(plan.delete_host) == MASS_DELETE_MIN + 10
    small = {f"f{i}": f(f"f{i}") for i in range(10)}
    plan = initial_plan(small, {}, dict(small))  # all of it, but only 10 paths
    assert spare_host_deletions(plan, len(small)) == [] and len(plan.delete_host) == 10


def test_state_file_keeps_the_copy_identity_and_marks_use(tmp_path: Path) -> None:
    from pydesk.sync.state import last_used

    sf = StateFile(tmp_path / "k.json", "/src")
    assert last_used(sf.path) == 0.0
    sf.save({"a": f("a")}, "ab" * 16, 7)
    assert sf.read() == Saved({"a": f("a")}, "ab" * 16, 7)
    assert sf.load() == {"a": f("a")}
    assert last_used(sf.path) == sf.path.stat().st_mtime  # before any marker: the state's time
    sf.mark_used()
    assert last_used(sf.path) == sf.used_marker.stat().st_mtime
