"""Sessions outlive their agent and their guest process: resume() and failed-session restarts."""

from __future__ import annotations

import sys
from pathlib import Path

from pydesk.sync.manager import SyncManager
from pydesk.sync.transport import SubprocessTransport, local_factory

from .conftest import SyncSetup, eventually, tree


def test_a_new_agent_resumes_every_root_without_a_request(sync: SyncSetup) -> None:
    (sync.host / "dir").mkdir()
    (sync.host / "dir/a").write_text("a")
    (sync.host / "one.conf").write_text("x=1")
    m = sync.manager()
    g_dir = Path(m.guest_path(str(sync.host / "dir")))
    g_file = Path(m.guest_path(str(sync.host / "one.conf")))
    m.close()
    (sync.host / "dir/a").write_text("changed while no agent ran")
    (sync.host / "one.conf").write_text("x=2")
    m2 = sync.manager()
    assert m2.resume() == 2
    eventually(lambda: g_dir.joinpath("a").read_text() == "changed while no agent ran", 10,
               "the dir root resumed")
    eventually(lambda: g_file.read_text() == "x=2", 10, "the file root resumed")
    (sync.host / "dir/b").write_text("live again")
    eventually(lambda: tree(g_dir) == tree(sync.host / "dir"), 1.0, "live after resume")
    assert m2.resume() == 0  # already running


def test_a_failed_session_is_restarted_and_catches_up(sync: SyncSetup) -> None:
    transports: list[SubprocessTransport] = []
    factory = local_factory(sys.executable)

    def tracking(argv: list[str]) -> SubprocessTransport:
        t = factory(argv)
        assert isinstance(t, SubprocessTransport)
        transports.append(t)
        return t

    (sync.host / "f").write_text("1")
    m = SyncManager(tracking, sync.state, guest_base=str(sync.guest_base), retry_interval=0.2)
    sync.managers.append(m)
    g = Path(m.guest_path(str(sync.host)))
    transports[0].proc.kill()  # the guest side dies (SSH connection lost, guest rebooted)
    eventually(lambda: m.status()[0].state == "failed", 5, "the session noticed")
    (sync.host / "f").write_text("2")  # while nothing syncs
    eventually(lambda: m.status()[0].state == "live", 10, "restarted by the supervisor")
    eventually(lambda: (g / "f").read_text() == "2", 5, "caught up")
    assert len(transports) == 2
    assert m.status()[0].pushed == 1  # only what changed


def test_a_guest_side_that_cannot_start_is_a_clear_error(sync: SyncSetup) -> None:
    import pytest

    from pydesk.sync.errors import SessionFailed

    m = SyncManager(local_factory("/bin/false"), sync.state, guest_base=str(sync.guest_base),
                    first_sync_timeout=30, retry_interval=60)
    sync.managers.append(m)
    with pytest.raises(SessionFailed, match="guest side stopped") as info:
        m.guest_path(str(sync.host))
    assert info.value.status == 500
    assert m.status()[0].state == "failed"


def test_a_change_the_guest_never_applied_is_not_taken_as_agreed(sync: SyncSetup) -> None:
    import os
    import signal
    import time

    transports: list[SubprocessTransport] = []
    factory = local_factory(sys.executable)

    def tracking(argv: list[str]) -> SubprocessTransport:
        t = factory(argv)
        assert isinstance(t, SubprocessTransport)
        transports.append(t)
        return t

    (sync.host / "f").write_text("old")
    m = SyncManager(tracking, sync.state, guest_base=str(sync.guest_base), retry_interval=60)
    sync.managers.append(m)
    g = Path(m.guest_path(str(sync.host)))
    guest_pid = transports[0].proc.pid
    os.kill(guest_pid, signal.SIGSTOP)  # the guest side hangs: nothing is applied any more
    (sync.host / "f").write_text("new, never applied in the guest")
    time.sleep(2.6)  # past the periodic save of the agreed state
    os.kill(guest_pid, signal.SIGKILL)
    m.close()
    assert (g / "f").read_text() == "old"
    m2 = sync.manager()
    m2.guest_path(str(sync.host))
    assert (sync.host / "f").read_text() == "new, never applied in the guest"
    assert (g / "f").read_text() == "new, never applied in the guest"
