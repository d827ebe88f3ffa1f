"""The sync decisions: three-way comparison with the agreed state, and the conflict rule."""

from __future__ import annotations

from pydesk.sync.plan import (
    GUEST,
    HOST,
    Action,
    conflict_name,
    conflict_winner,
    decide,
    initial_plan,
    under,
)
from pydeskd.syncd.fstree import DIR, FILE, LINK, Entry


def f(path: str, mtime: int = 1, size: int = 1, mode: int = 0o644) -> Entry:
    return Entry(path, FILE, size, mtime, mode)


def d(path: str, mode: int = 0o755, mtime: int = 1) -> Entry:
    return Entry(path, DIR, 0, mtime, mode)


def test_equal_sides_need_nothing() -> None:
    assert decide(f("a"), f("a"), None) is None
    assert decide(None, None, f("a")) is None
    # directories compare by mode only (children change their mtime)
    assert decide(d("x", mtime=1), d("x", mtime=99), None) is None
    # links by target only
    assert decide(Entry("l", LINK, 0, 1, 0, "t"), Entry("l", LINK, 0, 5, 0, "t"), None) is None


def test_one_side_changed() -> None:
    base = f("a", mtime=1)
    assert decide(f("a", mtime=2), base, base) is Action.PUSH
    assert decide(base, f("a", mtime=2), base) is Action.PULL
    assert decide(None, base, base) is Action.DELETE_GUEST
    assert decide(base, None, base) is Action.DELETE_HOST
    assert decide(f("a"), None, None) is Action.PUSH  # new on the host
    assert decide(None, f("a"), None) is Action.PULL  # new in the guest


def test_both_changed() -> None:
    base = f("a", mtime=1)
    assert decide(f("a", mtime=2), f("a", mtime=3), base) is Action.CONFLICT
    # no agreed state (first sync after the state was lost): different contents keep both
    assert decide(f("a", mtime=2), f("a", mtime=3), None) is Action.CONFLICT
    # a deletion against a modification: the modification survives
    assert decide(None, f("a", mtime=3), base) is Action.PULL
    assert decide(f("a", mtime=3), None, base) is Action.PUSH
    # directories: mode only; the side that changed it, else the newer
    assert decide(d("x", 0o700), d("x", 0o755), d("x", 0o755)) is Action.PUSH
    assert decide(d("x", 0o700, 5), d("x", 0o711, 9), d("x", 0o755)) is Action.PULL


def test_initial_plan_sends_only_differences_and_deletes_deepest_first() -> None:
    base = {"same": f("same"), "gone": d("gone"), "gone/x": f("gone/x"),
            "edited": f("edited", 1)}
    host = {"same": f("same"), "edited": f("edited", 2), "new": f("new")}
    guest = {"same": f("same"), "gone": d("gone"), "gone/x": f("gone/x"),
             "edited": f("edited", 1), "theirs": f("theirs")}
    plan = initial_plan(host, guest, base)
    assert [e.path for e in plan.push] == ["edited", "new"]
    assert [e.path for e in plan.pull] == ["theirs"]
    assert [e.path for e in plan.delete_guest] == ["gone/x", "gone"]
    assert plan.delete_host == [] and plan.conflicts == []
    assert set(plan.agreed) == {"same"}


def test_after_a_restart_with_no_change_nothing_moves() -> None:
    tree = {f"d{i}/f{j}": f(f"d{i}/f{j}", i * j) for i in range(50) for j in range(200)}
    plan = initial_plan(tree, dict(tree), dict(tree))
    assert not (plan.push or plan.pull or plan.delete_guest or plan.delete_host
                or plan.conflicts)
    assert len(plan.agreed) == 10_000


def test_conflict_winner_newer_mtime_and_directories_first() -> None:
    assert conflict_winner(f("a", 5), f("a", 4)) == HOST
    assert conflict_winner(f("a", 4), f("a", 5)) == GUEST
    assert conflict_winner(f("a", 4), f("a", 4)) == HOST  # tie: the host
    assert conflict_winner(f("a", 9), d("a", mtime=1)) == GUEST
    assert conflict_winner(d("a", mtime=1), f("a", 9)) == HOST


def test_conflict_name_is_beside_the_file_with_side_and_utc_time() -> None:
    assert conflict_name("dir/x.txt", GUEST, now=0) == \
        "dir/x.txt.pydesk-conflict-guest-19700101T000000Z"


def test_under_lists_children_deepest_first() -> None:
    m = {"a": d("a"), "a/b": d("a/b"), "a/b/c": f("a/b/c"), "ab": f("ab")}
    assert under("a", m) == ["a/b/c", "a/b"]


def test_match_renames_pairs_only_seen_moves_of_unchanged_files() -> None:
    from pydesk.sync.plan import match_renames

    gone = {"a/x": f("a/x", 5), "b/y": f("b/y", 5), "c": f("c", 9), "dir": d("dir")}
    appeared = {"z/x": f("z/x", 5), "w": f("w", 5), "q": f("q", 7), "dir2": d("dir2")}
    # look-alikes (same size, mtime, mode) without a seen move are not renames
    assert match_renames(gone, appeared, {}) == []
    moves = {"w": "a/x", "q": "c", "dir2": "dir", "z/x": "a/x", "nowhere": "b/y"}
    # c -> q changed size since (not the same file any more), dirs are not paired, a/x once
    assert match_renames(gone, appeared, moves) == [("a/x", "w")]
