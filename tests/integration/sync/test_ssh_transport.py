"""The SSH exec transport for real: a session through OpenSSH's sshd on 127.0.0.1 (the server
the guest runs), with the channel the agent uses (pinned host key, instance client key)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydesk.sync.manager import SyncManager
from pydesk.sync.transport import ssh_factory
from pydesk.vm.channel import GuestChannel
from pydesk.vm.instance import ensure_keys, instance_files
from tests.vm.sshd import Sshd

from .conftest import eventually, tree


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[GuestChannel]:
    files = instance_files("sync", tmp_path / "home")
    keys = ensure_keys(files)
    sshd = Sshd(tmp_path, files.host_key, keys.client_public_line).start()
    try:
        with GuestChannel.connect(sshd.port, keys.client_private,
                                  keys.host_public_line) as chan:
            yield chan
    finally:
        sshd.stop()


def test_sync_over_an_ssh_exec_channel(channel: GuestChannel, tmp_path: Path) -> None:
    host = tmp_path / "src"
    (host / "d").mkdir(parents=True)
    for i in range(500):
        (host / "d" / f"f{i}").write_text(f"{i}\n" * 100)
    (host / "big").write_bytes(bytes(range(256)) * 20_000)  # 5 MB: pieces and channel windows
    manager = SyncManager(ssh_factory(lambda: channel.transport), tmp_path / "state",
                          guest_base=str(tmp_path / "guest"), guest_python=sys.executable)
    try:
        guest = Path(manager.guest_path(str(host)))
        assert tree(guest) == tree(host)
        (host / "d/f1").write_text("edited")
        (guest / "from-guest").write_text("back")
        eventually(lambda: tree(guest) == tree(host) and (host / "from-guest").exists(), 2.0,
                   "edits both ways over SSH")
    finally:
        manager.close()
    assert manager.status() == []
