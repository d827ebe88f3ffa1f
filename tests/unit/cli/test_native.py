"""The native engine's start/stop (pydesk.cli.native) with a fake spawner: argv, waiting for
/_ping, a daemon that dies at once, stop's SIGTERM then SIGKILL, and pidfiles naming others."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pydesk.cli import native
from pydesk.cli.native import NativeError, NativePaths, Spawner


def test_argv_and_paths(tmp_path: Path) -> None:
    paths = NativePaths(tmp_path / "data", tmp_path / "run", tmp_path / "d.json")
    assert paths.socket == tmp_path / "run" / "docker.sock"
    assert native.daemon_argv(["/v/bin/pydeskd"], paths) == [
        "/v/bin/pydeskd", "-H", f"unix://{tmp_path}/run/docker.sock",
        "--data-root", f"{tmp_path}/data", "--exec-root", f"{tmp_path}/run",
        "--pidfile", f"{tmp_path}/run/pydeskd.pid", "--config-file", f"{tmp_path}/d.json"]
    assert NativePaths().socket == Path("/run/pydesk/docker.sock")  # the passthrough socket
    assert "--config-file" not in native.daemon_argv(["p"], NativePaths())


def test_is_pydeskd() -> None:
    assert native.is_pydeskd(["/v/bin/python3", "/v/bin/pydeskd", "-H", "x"])
    assert native.is_pydeskd(["/usr/bin/python3", "-m", "pydeskd.daemon.main"])
    assert not native.is_pydeskd(["/bin/sleep", "100"])
    assert not native.is_pydeskd([])


class FakeProcesses:
    def __init__(self, alive_for: int = 10**6, answers_after: int = 2) -> None:
        self.spawned: list[list[str]] = []
        self.signals: list[tuple[int, int]] = []
        self.polls = 0
        self.alive_for = alive_for
        self.answers_after = answers_after
        self.dead: set[int] = set()

    def spawner(self) -> Spawner:
        return Spawner(self.spawn, self.cmdline, self.kill, lambda pid: not self.cmdline(pid))

    def spawn(self, argv: list[str], log: Path) -> int:
        self.spawned.append(argv)
        return 4242

    def cmdline(self, pid: int) -> list[str]:
        self.polls += 1
        if pid in self.dead or self.polls > self.alive_for:
            return []
        return ["/v/bin/python", "/v/bin/pydeskd"]

    def kill(self, pid: int, sig: int) -> None:
        self.signals.append((pid, sig))

    def ping(self, path: Path) -> bool:
        self.answers_after -= 1
        return self.answers_after < 0


def test_start_waits_for_ping(tmp_path: Path) -> None:
    fake = FakeProcesses(answers_after=3)
    pid = native.start(NativePaths(exec_root=tmp_path), fake.ping, fake.spawner(),
                       program=["pydeskd"], poll=0)
    assert pid == 4242 and fake.spawned[0][0] == "pydeskd"


def test_start_reports_a_daemon_that_exits_with_this_runs_log(tmp_path: Path) -> None:
    paths = NativePaths(exec_root=tmp_path)
    paths.log.write_text("an earlier run's line\n")

    def spawn(argv: list[str], log: Path) -> int:
        with log.open("a") as f:
            f.write("failed to start daemon: pid file found\n")
        return 4242

    fake = FakeProcesses(alive_for=0, answers_after=10**6)
    spawner = Spawner(spawn, fake.cmdline, fake.kill, lambda pid: True)
    with pytest.raises(NativeError, match="pid file found") as e:
        native.start(paths, fake.ping, spawner, program=["pydeskd"], poll=0)
    assert "earlier" not in e.value.message


def test_child_exited_waits_for_our_child_not_its_cmdline() -> None:
    import subprocess

    proc = subprocess.Popen(["sleep", "0.3"])
    assert not native.child_exited(proc.pid)
    proc.wait()  # reaped by Popen: not our child any more, and gone
    assert native.child_exited(proc.pid)


def test_start_times_out(tmp_path: Path) -> None:
    fake = FakeProcesses(answers_after=10**9)
    with pytest.raises(NativeError, match="does not answer"):
        native.start(NativePaths(exec_root=tmp_path), fake.ping, fake.spawner(),
                     program=["pydeskd"], timeout=0.05, poll=0.01)


def test_stop_terms_then_kills(tmp_path: Path) -> None:
    paths = NativePaths(exec_root=tmp_path)
    paths.pidfile.write_text("4242\n")
    fake = FakeProcesses(alive_for=3)  # exits after the third look
    assert native.stop(paths, fake.spawner(), poll=0) == 4242
    assert fake.signals == [(4242, signal.SIGTERM)]
    stubborn = FakeProcesses()
    assert native.stop(paths, stubborn.spawner(), timeout=0.03, poll=0.01) == 4242
    assert stubborn.signals == [(4242, signal.SIGTERM), (4242, signal.SIGKILL)]


def test_stop_never_signals_what_the_pidfile_does_not_show_is_pydeskd(tmp_path: Path) -> None:
    paths = NativePaths(exec_root=tmp_path)
    fake = FakeProcesses()
    assert native.stop(paths, fake.spawner()) is None  # no pidfile
    paths.pidfile.write_text("4242\n")
    fake.dead.add(4242)
    assert native.stop(paths, fake.spawner()) is None  # stale
    other = Spawner(fake.spawn, lambda pid: ["/bin/sleep", "9"], fake.kill)
    assert native.stop(paths, other) is None  # a recycled pid
    assert fake.signals == []
