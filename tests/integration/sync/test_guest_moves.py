"""A rename made in the guest reaches the host as a rename (inotify's move cookies, sent as
``mv`` with the changes), not as a delete plus the whole content fetched again."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import SyncSetup, eventually, tree


def test_a_guest_rename_does_not_fetch_the_content_again(sync: SyncSetup) -> None:
    (sync.host / "big.bin").write_bytes(os.urandom(4 << 20))
    m = sync.manager()
    g = Path(m.guest_path(str(sync.host)))
    inode = (sync.host / "big.bin").stat().st_ino
    before = m.status()[0]
    # Within the root, watched since the guest's scan (a directory the first sync made is
    # watched once the guest reads its creation: a move into it before that is unpaired).
    os.rename(g / "big.bin", g / "renamed.bin")
    eventually(lambda: tree(g) == tree(sync.host), 3.0, "guest rename reached the host")
    after = m.status()[0]
    assert after.bytes_received - before.bytes_received < 10_000
    assert (sync.host / "renamed.bin").stat().st_ino == inode  # renamed here too
    assert after.pulled == before.pulled
