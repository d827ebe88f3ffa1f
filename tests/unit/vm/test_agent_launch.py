"""The agent's control-port step: save only on a cold boot's snapshot point, always send go."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from pydesk.agent import launch
from pydesk.agent.main import Agent
from pydesk.vm import resume
from pydesk.vm.instance import InstanceFiles
from pydeskd import vmcontract


class FakeAgent:
    def __init__(self, tmp_path: Path, mode: launch.Mode, released: bool) -> None:
        self.files = InstanceFiles(tmp_path)
        self.mode = mode
        self.released = released
        self.save_key: str | None = "key"
        self.host, self.guest = socket.socketpair()
        self.ctl: resume.CtlPort | None = resume.CtlPort(self.host)
        self.reports: list[str] = []
        self.runtime: dict[str, Any] = {}
        self.stop_event = threading.Event()

    def qemu_alive(self) -> bool:
        return True

    def report(self, state: object, message: str, error: str = "") -> None:
        self.reports.append(message)

    def record_runtime(self, **values: object) -> None:
        self.runtime.update(values)


@pytest.fixture
def saves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake_save(qmp: object, files: InstanceFiles, key: str) -> resume.SavedState:
        calls.append(key)
        return resume.SavedState(key, 225 << 20, 0.0, 1.5)

    monkeypatch.setattr(resume, "save", fake_save)
    return calls


def step(agent: FakeAgent) -> None:
    launch.serve_ctl(cast(Agent, agent))


def announce(agent: FakeAgent) -> None:
    agent.guest.sendall((vmcontract.CTL_AT_SNAPSHOT_POINT + "\n").encode())


def test_cold_boot_saves_at_the_snapshot_point_then_sends_go(tmp_path: Path,
                                                             saves: list[str]) -> None:
    agent = FakeAgent(tmp_path, launch.Mode.COLD, released=False)
    step(agent)  # nothing said yet
    assert not saves
    with pytest.raises(BlockingIOError):  # no go sent
        agent.guest.recv(1, socket.MSG_DONTWAIT)
    announce(agent)
    step(agent)
    assert saves == ["key"] and agent.released
    assert agent.runtime["state_saved_seconds"] == 1.5
    assert any("saved the VM state" in r for r in agent.reports)
    agent.guest.settimeout(1)
    assert vmcontract.GoLine.parse(agent.guest.recv(4096)) is not None


def test_no_key_no_save_but_go(tmp_path: Path, saves: list[str]) -> None:
    agent = FakeAgent(tmp_path, launch.Mode.COLD, released=False)
    agent.save_key = None
    announce(agent)
    step(agent)
    assert not saves and agent.released


def test_an_adopted_guest_waiting_at_the_point_gets_go_without_a_save(
        tmp_path: Path, saves: list[str]) -> None:
    agent = FakeAgent(tmp_path, launch.Mode.ADOPTED, released=True)
    step(agent)  # a poll: nothing there
    announce(agent)
    step(agent)
    assert not saves
    agent.guest.settimeout(1)
    assert vmcontract.GoLine.parse(agent.guest.recv(4096)) is not None


def test_a_closed_control_port_is_reported_and_retried(tmp_path: Path,
                                                       saves: list[str]) -> None:
    agent = FakeAgent(tmp_path, launch.Mode.COLD, released=False)
    agent.guest.close()
    agent.stop_event.set()  # no 1 s pause in the test
    step(agent)
    assert agent.ctl is None and not agent.released
    assert any("control port failed" in r for r in agent.reports)
