"""Which running QEMU a new agent may adopt, what it reads from its command line, and that an
adopted VM left paused (its agent killed during resume.save) runs again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pydesk.agent import launch
from pydesk.agent.qemuproc import adoptable, continue_if_paused, ssh_port_of
from pydesk.vm.config import VmConfig
from pydesk.vm.errors import VmError
from pydesk.vm.instance import InstanceFiles
from pydesk.vm.qmp import QmpError
from tests.unit.vm.test_resume import argv_for

FILES = InstanceFiles(Path("/h/default"))
BINARY = "/usr/bin/qemu-system-x86_64"


def test_our_qemu_is_adoptable() -> None:
    assert adoptable(argv_for(FILES, 40001), FILES, BINARY)
    assert adoptable(argv_for(FILES, 40001, incoming=True), FILES, BINARY)
    # found through another path to the same program (a symlink, PATH): same name
    assert adoptable(["qemu-system-x86_64", *argv_for(FILES, 1)[1:]], FILES, BINARY)


def test_another_instance_or_program_is_not() -> None:
    other = InstanceFiles(Path("/h/other"))
    assert not adoptable(argv_for(other, 40001), FILES, BINARY)
    assert not adoptable(argv_for(FILES, 40001), FILES, "/usr/bin/qemu-system-aarch64")
    assert not adoptable(["/usr/bin/python3", "-c", f"path={FILES.qmp_socket},",
                          str(FILES.qemu_pid)], FILES, BINARY)
    assert not adoptable([], FILES, BINARY)
    # the same sockets in a prefix directory (/h/default2) are not ours either
    prefixed = InstanceFiles(Path("/h/default2"))
    assert not adoptable(argv_for(prefixed, 1), FILES, BINARY)


def test_ssh_port_from_the_hostfwd() -> None:
    assert ssh_port_of(argv_for(FILES, 40001)) == 40001
    assert ssh_port_of(["qemu", "-netdev", "user,id=net0"]) == 0
    assert ssh_port_of(["qemu", "-netdev", "user,hostfwd=tcp:127.0.0.1:x-:22"]) == 0


# --- an agent killed during resume.save left the VM paused: adoption runs it again -----------

class FakeQemu:
    """QEMU's run state and migration over QMP, as far as continue_if_paused uses them; a stand-in
    for a real QEMU (boots are the vm tier's). ``load_polls``: query-status calls an incoming
    migration (``inmigrate``) still takes before it completes (then paused)."""

    def __init__(self, status: str, migration: str = "none", *, load_polls: int = 0,
                 cont_refused: bool = False) -> None:
        self.status = status
        self.migration = migration
        self.load_polls = load_polls
        self.cont_refused = cont_refused
        self.calls: list[str] = []

    def query_status(self) -> str:
        self.calls.append("query-status")
        if self.status == "inmigrate" and self.migration == "active":
            if self.load_polls <= 0:
                self.status, self.migration = "paused", "completed"
            self.load_polls -= 1
        return self.status

    def query_migrate(self) -> dict[str, Any]:
        self.calls.append("query-migrate")
        return {"status": self.migration}

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        self.calls.append(command)
        assert command == "migrate_cancel"
        assert self.migration in ("active", "setup")
        self.migration = "cancelled"
        return {}

    def cont(self) -> None:
        self.calls.append("cont")
        if self.cont_refused or self.status not in ("paused", "postmigrate"):
            raise QmpError(f"QMP cont: refused in state {self.status}")
        if self.migration in ("active", "setup"):
            raise QmpError("QMP cont: a migration is running")
        self.status = "running"


def run(qemu: FakeQemu, timeout: float = 5.0) -> str:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return continue_if_paused(qemu, timeout=timeout, sleep=sleep, clock=lambda: now[0])


def test_a_running_vm_is_left_alone() -> None:
    qemu = FakeQemu("running")
    assert run(qemu) == ""
    assert qemu.calls == ["query-status"]


@pytest.mark.parametrize("migration", ["none", "completed", "failed", "cancelled"])
def test_paused_between_stop_and_cont_is_continued(migration: str) -> None:
    # killed after QMP stop: before migrate, after the save completed, or after it failed
    qemu = FakeQemu("paused", migration)
    note = run(qemu)
    assert qemu.status == "running" and "cont" in qemu.calls
    assert "paused" in note and "continued" in note
    assert "migrate_cancel" not in qemu.calls


def test_postmigrate_is_continued() -> None:
    qemu = FakeQemu("postmigrate", "completed")
    assert "postmigrate" in run(qemu)
    assert qemu.status == "running"


def test_a_save_still_under_way_is_cancelled_then_continued() -> None:
    qemu = FakeQemu("paused", "active")
    run(qemu)
    assert qemu.status == "running"
    assert qemu.calls.index("migrate_cancel") < qemu.calls.index("cont")


def test_a_load_under_way_is_waited_for_then_continued() -> None:
    # an agent killed during resume.load: the state arrives paused, then runs
    qemu = FakeQemu("inmigrate", "active", load_polls=3)
    run(qemu)
    assert qemu.status == "running"
    assert "migrate_cancel" not in qemu.calls


def test_a_vm_that_cannot_run_again_is_an_error() -> None:
    with pytest.raises(VmError, match="is inmigrate"):  # a load that never started
        run(FakeQemu("inmigrate", "none"), timeout=1.0)
    with pytest.raises(VmError, match="is shutdown"):
        run(FakeQemu("shutdown"))
    with pytest.raises(QmpError, match="refused"):
        run(FakeQemu("paused", cont_refused=True))


class FakeAgent:
    def __init__(self, files: InstanceFiles) -> None:
        self.files = files
        self.reports: list[str] = []
        self.runtime: dict[str, object] = {}
        self.start_note = ""
        self.qemu: object = None
        self.mode: object = None
        self.ssh_port = 0

    def report(self, state: object, message: str, error: str = "") -> None:
        self.reports.append(f"{message} {error}".strip())

    def record_runtime(self, **values: object) -> None:
        self.runtime.update(values)


class FakeAdopted:
    def __init__(self, cmdline: list[str]) -> None:
        self.pid = 4242
        self.proc = self
        self._cmdline = cmdline

    def cmdline(self) -> list[str]:
        return self._cmdline


def test_adopt_continues_a_paused_vm(monkeypatch: pytest.MonkeyPatch) -> None:
    qemu = FakeQemu("paused", "completed")
    sockets: list[Path] = []

    def fake_qmp(path: Path, timeout: float = 5.0) -> FakeQemu:
        sockets.append(path)
        return qemu

    monkeypatch.setattr(launch, "Qmp", fake_qmp)
    agent = FakeAgent(FILES)
    launch._adopt(agent, VmConfig(), FakeAdopted(argv_for(FILES, 40001)))  # type: ignore[arg-type]
    assert qemu.status == "running" and sockets == [FILES.qmp_socket]
    assert agent.ssh_port == 40001 and agent.mode is launch.Mode.ADOPTED
    assert any("continued" in r for r in agent.reports)
    assert "paused" in agent.start_note


def test_adopt_of_a_vm_that_cannot_run_says_how_to_stop_it(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(launch, "Qmp", lambda path, timeout=5.0: FakeQemu("guest-panicked"))
    with pytest.raises(VmError) as err:
        launch._adopt(FakeAgent(FILES), VmConfig(),  # type: ignore[arg-type]
                      FakeAdopted(argv_for(FILES, 40001)))
    assert "guest-panicked" in err.value.message and "vm stop" in err.value.hint


def test_adopt_goes_on_when_qmp_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    class Mute(FakeQemu):
        def query_status(self) -> str:
            raise QmpError("QMP query-status: no answer from QEMU in 5s")

    monkeypatch.setattr(launch, "Qmp", lambda path, timeout=5.0: Mute("running"))
    agent = FakeAgent(FILES)
    launch._adopt(agent, VmConfig(), FakeAdopted(argv_for(FILES, 40001)))  # type: ignore[arg-type]
    assert agent.ssh_port == 40001
    assert any("run state is unknown" in r for r in agent.reports)
