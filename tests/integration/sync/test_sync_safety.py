"""Real sessions (local guest side): one bad path does not stop a root's sync, look-alike
files are not taken for renames, and a symlink in the guest copy leads nowhere on the host
(review 7, findings 1, 3, 7; proofs p5_unsafe_loop, p3_rename_pairing, p1)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .conftest import SyncSetup, eventually

T = 1_700_000_000 * 10**9


def test_a_path_under_a_host_symlink_does_not_stop_the_sync(sync: SyncSetup,
                                                             tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (sync.host / "lib").mkdir()
    (sync.host / "lib/a.txt").write_text("a")
    (sync.host / "index.html").write_text("v1")
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    m.close()  # the agent stopped; meanwhile:
    shutil.rmtree(sync.host / "lib")
    os.symlink("../shared", sync.host / "lib")  # the user made lib a link
    (g / "lib/x.log").write_text("container log")  # a container wrote under the old lib/
    (sync.host / "index.html").write_text("v2")
    m2 = sync.manager()
    assert m2.guest_path(str(sync.host)) == str(g)  # the first sync completes
    [status] = m2.status()
    assert status.state == "live" and "lib/x.log" in status.error
    assert (g / "index.html").read_text() == "v2"
    assert list(shared.iterdir()) == []  # nothing was written through the link
    (sync.host / "later.txt").write_text("still syncing")
    eventually((g / "later.txt").exists, 3.0, "a later host change reached the guest")
    assert not any("restarting" in message for message, _ in sync.reports)


def test_look_alike_files_keep_their_own_content_both_ways(sync: SyncSetup) -> None:
    for name, text in (("a.txt", "AAAAA"), ("c.txt", "CCCCC")):
        (sync.host / name).write_text(text)
        os.utime(sync.host / name, ns=(T, T))
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    # host: rm a.txt; tar x b.txt (the archive's mtime)
    os.unlink(sync.host / "a.txt")
    (sync.host / "b.txt").write_text("BBBBB")
    os.utime(sync.host / "b.txt", ns=(T, T))
    eventually(lambda: (g / "b.txt").exists() and not (g / "a.txt").exists(), 3.0, "host batch")
    assert (g / "b.txt").read_text() == "BBBBB"
    # a container: rm c.txt; cp -p d.txt .
    os.unlink(g / "c.txt")
    (g / "d.txt").write_text("DDDDD")
    os.utime(g / "d.txt", ns=(T, T))
    eventually(lambda: (sync.host / "d.txt").exists() and not (sync.host / "c.txt").exists(),
               3.0, "guest batch")
    assert (sync.host / "d.txt").read_text() == "DDDDD"


def test_a_guest_symlink_out_of_the_copy_leads_nowhere_on_the_host(sync: SyncSetup,
                                                                   tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / ".ssh").mkdir(parents=True)
    (outside / ".ssh/id_rsa").write_text("TOP-SECRET")
    os.chmod(outside / ".ssh", 0o700)
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    os.symlink(str(outside), g / "evil")  # a container makes a link...
    eventually((sync.host / "evil").is_symlink, 3.0, "the link reached the host")
    os.unlink(g / "evil")  # ...then swaps it for a directory with the same inner names
    (g / "evil/.ssh").mkdir(parents=True)
    os.chmod(g / "evil/.ssh", 0o777)
    (g / "evil/.ssh/id_rsa").write_text("planted")
    eventually(lambda: (sync.host / "evil").is_dir() and not (sync.host / "evil").is_symlink(),
               3.0, "the directory replaced the link on the host")
    eventually((sync.host / "evil/.ssh/id_rsa").exists, 3.0, "its file came too")
    assert (outside / ".ssh/id_rsa").read_text() == "TOP-SECRET"
    assert (outside / ".ssh").stat().st_mode & 0o777 == 0o700
    assert m.status()[0].state == "live"
