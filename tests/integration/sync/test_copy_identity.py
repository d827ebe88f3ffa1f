"""A guest copy that is lost, emptied or older than the host's agreed state never costs host files
(review finding 2: proofs p2_guest_copy_lost, p2b_guest_copy_stale); resume()'s retention."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from pydesk.sync.manager import RESUME_WITHIN_S, root_key
from pydeskd.syncd.identity import XATTR

from .conftest import SyncSetup, eventually, tree


def state_of(sync: SyncSetup, root: Path) -> dict[str, object]:
    path = sync.state / f"{root_key(str(root))}.json"
    try:
        raw: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return raw


def copy_identity(guest_root: Path) -> dict[str, object]:
    raw: dict[str, object] = json.loads(os.getxattr(guest_root, XATTR))
    return raw


def test_a_removed_guest_copy_is_refilled_not_taken_for_deletions(sync: SyncSetup) -> None:
    for i in range(5):
        (sync.host / f"page{i}.html").write_text(f"user work {i}")
    before = tree(sync.host)
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    m.close()
    shutil.rmtree(g)  # freed to make room (docs/sync.md), or a new data disk
    m2 = sync.manager()
    assert m2.resume() == 1
    eventually(lambda: tree(g) == before, 10, "the guest copy filled again from the host")
    assert tree(sync.host) == before
    assert any("not the one last synced" in message for message, _ in sync.reports)


def test_an_older_guest_copy_does_not_revert_host_edits(sync: SyncSetup) -> None:
    (sync.host / "index.html").write_text("old")
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    eventually(lambda: state_of(sync, sync.host).get("gen", 0) == 1, 5, "first save")
    shutil.copytree(g, sync.state.parent / "on-disk", symlinks=True)  # what reached the disk
    assert copy_identity(sync.state.parent / "on-disk")["gen"] == 1  # copytree keeps xattrs
    (sync.host / "index.html").write_text("NEW WORK")
    (sync.host / "new.py").write_text("print(1)")
    eventually((g / "new.py").exists, 2, "live sync")
    eventually(lambda: int(str(state_of(sync, sync.host).get("gen", 0))) >= 2, 5, "saved")
    m.close()
    # The crash: the guest lost writes it had acknowledged; its copy is the older one.
    shutil.rmtree(g)
    shutil.copytree(sync.state.parent / "on-disk", g, symlinks=True)
    m2 = sync.manager()
    m2.guest_path(str(sync.host))
    assert (sync.host / "index.html").read_text() == "NEW WORK"
    assert (sync.host / "new.py").read_text() == "print(1)"
    assert (g / "index.html").read_text() == "NEW WORK"
    # The older guest version is kept, not silently dropped (a conflict copy on both sides).
    copies = [p for p in os.listdir(sync.host) if ".pydesk-conflict-guest-" in p]
    assert [(sync.host / c).read_text() for c in copies] == ["old"]
    assert sorted(os.listdir(g)) == sorted(os.listdir(sync.host))


def test_the_same_copy_is_trusted_so_guest_deletions_reach_the_host(sync: SyncSetup) -> None:
    for i in range(10):
        (sync.host / f"f{i}").write_text(str(i))
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    m.close()
    state = state_of(sync, sync.host)
    assert state["copy_id"] == copy_identity(g)["id"] and state["gen"] == copy_identity(g)["gen"]
    for i in range(3):  # a container deleted these while no agent ran
        (g / f"f{i}").unlink()
    sync.manager().guest_path(str(sync.host))
    assert sorted(os.listdir(sync.host)) == [f"f{i}" for i in range(3, 10)]


def test_a_first_sync_deleting_most_host_files_keeps_them(sync: SyncSetup) -> None:
    for i in range(100):
        (sync.host / f"f{i:03d}").write_text(str(i))
    before = tree(sync.host)
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    m.close()
    for i in range(60):  # same copy, same identity: looks like 60 deletions in the guest
        (g / f"f{i:03d}").unlink()
    sync.manager().guest_path(str(sync.host))
    assert tree(sync.host) == before
    assert tree(g) == before  # sent back instead
    assert any("lacks 60 of the 100 host paths" in message for message, _ in sync.reports)


def test_the_agreed_state_is_saved_only_once_the_guest_made_it_durable(sync: SyncSetup) -> None:
    (sync.host / "a").write_text("1")
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    eventually(lambda: state_of(sync, sync.host).get("gen") == 1, 5, "first save")
    (sync.host / "a").write_text("22")
    eventually(lambda: state_of(sync, sync.host).get("gen") == 2, 5, "a save after a change")
    # The guest recorded that generation before the host wrote its state.
    assert copy_identity(g)["gen"] == 2


def test_resume_skips_roots_unused_for_the_retention_period(sync: SyncSetup) -> None:
    (sync.host / "old").mkdir()
    (sync.host / "recent").mkdir()
    m = sync.manager()
    m.guest_path(str(sync.host / "old"))
    m.guest_path(str(sync.host / "recent"))
    m.close()
    long_ago = time.time() - RESUME_WITHIN_S - 86400
    marker = sync.state / f"{root_key(str(sync.host / 'old'))}.used"
    assert marker.exists()
    os.utime(marker, (long_ago, long_ago))
    m2 = sync.manager()
    assert m2.resume() == 1
    assert [s.host_root for s in m2.status()] == [str(sync.host / "recent")]
    m2.guest_path(str(sync.host / "old"))  # used again: back in the next resume
    m2.close()
    assert sync.manager().resume() == 2
