"""The agent reads what the guest says of itself on the console: a guest that gave up on pydeskd
is reported degraded at once, with its reason (not after the boot timeout)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pydesk.agent.console import ConsoleWatch
from pydesk.agent.main import Agent
from pydesk.agent.status import State, last_status
from pydesk.vm.errors import ChannelError
from pydesk.vm.instance import InstanceFiles
from pydeskd import vmcontract


def test_lines_are_read_once_and_partial_lines_wait(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watch = ConsoleWatch(log)
    assert watch.new_lines() == []  # not there yet
    log.write_bytes(b"booting\r\nhalf")
    assert watch.new_lines() == ["booting"]
    with log.open("ab") as f:
        f.write(b" a line\n")
    assert watch.new_lines() == ["half a line"]
    assert watch.new_lines() == []


def test_the_failure_line_gives_its_reason(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(f"[    9.1] something\n[   12.3] {vmcontract.GUEST_SERIAL_FAILED}pydeskd did "
                   "not come up (see /var/log/pydeskd.log)\n")
    watch = ConsoleWatch(log)
    assert watch.guest_failure() == "pydeskd did not come up (see /var/log/pydeskd.log)"
    assert watch.guest_failure() is None  # said once


class RunningQemu:
    returncode = None

    def poll(self) -> None:
        return None


def test_a_guest_that_gave_up_is_degraded_at_once(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path / "inst")
    files.dir.mkdir(parents=True)
    files.console_log.write_text(f"{vmcontract.GUEST_SERIAL_FAILED}pydeskd exited (1)\n")
    agent = Agent(files)
    agent.qemu = RunningQemu()  # type: ignore[assignment]
    agent.ssh_port = 1

    def no_ssh(timeout: float) -> None:
        raise ChannelError("connection refused")

    agent.connect = no_ssh  # type: ignore[method-assign,assignment]
    # wait_ready loops until QEMU exits or a stop: stop it once the report is there.
    done = threading.Event()

    def stop_after_report() -> None:
        deadline = time.monotonic() + 5  # far below the boot timeout (180 s)
        while not done.wait(0.05) and time.monotonic() < deadline:
            status = last_status(files.status)
            if status is not None and status.state is State.DEGRADED:
                break
        agent.stop_event.set()

    watcher = threading.Thread(target=stop_after_report)
    watcher.start()
    try:
        assert agent.wait_ready(launched=time.monotonic()) is False
    finally:
        done.set()
        watcher.join()
    status = last_status(files.status)
    assert status is not None and status.state is State.DEGRADED
    assert "the guest gave up: pydeskd exited (1)" in status.message
