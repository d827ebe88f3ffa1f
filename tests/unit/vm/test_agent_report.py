"""The agent's final status for each way QEMU can end (a stand-in QEMU: only its exit code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydesk.agent.main import Agent
from pydesk.agent.status import State, last_status
from pydesk.vm.instance import InstanceFiles
from pydeskd import vmcontract


class ExitedQemu:
    """Stands in for the Popen of a QEMU that has exited with ``code``."""

    def __init__(self, code: int) -> None:
        self.returncode = code

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode

    def poll(self) -> int:
        return self.returncode


@pytest.mark.parametrize(("code", "stop", "console", "message", "error"), [
    (-9, False, "", "QEMU was killed (signal 9, SIGKILL)", "QEMU was killed (signal 9, SIGKILL)"),
    (0, True, vmcontract.GUEST_SERIAL_POWEROFF, "the guest powered off cleanly", ""),
    (0, True, "", "QEMU quit before the guest powered off", "did not power off in time"),
    (0, False, "Kernel panic", "the guest shut down or panicked", "without a stop request"),
    (1, False, "", "QEMU exited with status 1", "could not open disk"),
])
def test_final_report(  # noqa: PLR0917 (parametrized)
        tmp_path: Path, code: int, stop: bool, console: str, message: str,
        error: str) -> None:
    files = InstanceFiles(tmp_path / "default")
    files.dir.mkdir()
    files.console_log.write_text(f"boot...\n{console}\n")
    files.qemu_log.write_text("--- argv\nqemu: could not open disk image\n")
    agent = Agent(files)
    agent.qemu = ExitedQemu(code)  # type: ignore[assignment]
    agent.final_report(stop)
    event = last_status(files.status)
    assert event is not None and event.state is State.STOPPED
    assert event.message.startswith(message)
    assert error in event.error
    assert bool(event.error) == bool(error)


def test_stop_request_carries_the_timeout(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path / "default")
    files.dir.mkdir()
    agent = Agent(files)
    assert not agent.stop_requested()
    assert agent.requested_grace(30.0) == 30.0
    files.stop_request.write_text("2.5\n")
    assert agent.stop_requested() and agent.requested_grace(30.0) == 2.5
