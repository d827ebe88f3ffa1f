"""Status lines, exit reasons, the status the CLI derives, and the CLI's size parsing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from pydesk.agent.main import exit_reason
from pydesk.agent.process import find_process
from pydesk.agent.status import (
    State,
    StatusEvent,
    append_status,
    follow_status,
    last_status,
    read_status,
)
from pydesk.cli.vm import size_mib
from pydesk.vm.config import VmConfig
from pydesk.vm.errors import NotFound
from pydesk.vm.instance import instance_files, save_config
from pydesk.vm.lifecycle import status


def test_status_lines_roundtrip_and_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "status.jsonl"
    append_status(path, StatusEvent.now(State.STARTING, "QEMU started"))
    append_status(path, StatusEvent.now(State.STOPPED, "killed", "QEMU was killed (signal 9)"))
    with path.open("ab") as f:
        f.write(b'{"time": "x", "state": "runn')  # a writer in the middle of a line
    events, offset = read_status(path)
    assert [e.state for e in events] == [State.STARTING, State.STOPPED]
    assert events[1].error == "QEMU was killed (signal 9)"
    assert json.loads(path.read_bytes().splitlines()[0])["time"].endswith("Z")
    assert read_status(path, offset) == ([], offset)
    assert last_status(path) == events[1]


def test_follow_sees_appended_events(tmp_path: Path) -> None:
    path = tmp_path / "status.jsonl"
    append_status(path, StatusEvent.now(State.RUNNING, "ready"))
    seen = list(follow_status(path, 0, timeout=0.3))
    assert [e.message for e in seen] == ["ready"]


def test_exit_reasons() -> None:
    assert exit_reason(-9) == "QEMU was killed (signal 9, SIGKILL)"
    assert exit_reason(1) == "QEMU exited with status 1"


def test_status_of_instances(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYDESK_HOME", str(tmp_path))
    with pytest.raises(NotFound):
        status("default")
    files = instance_files("default")
    save_config(files, VmConfig())
    assert status("default").message == "never started"
    append_status(files.status, StatusEvent.now(State.RUNNING, "guest API ready"))
    # no agent alive: a 'running' line left behind does not make it running
    current = status("default")
    assert current.state is State.STOPPED and "agent is gone" in current.message
    append_status(files.status, StatusEvent.now(State.STOPPED, "QEMU was killed (signal 9)",
                                                "QEMU was killed (signal 9)"))
    assert status("default").error == "QEMU was killed (signal 9)"


def test_find_process_needs_pid_and_marker(tmp_path: Path) -> None:
    pidfile = tmp_path / "x.pid"
    assert find_process(pidfile, "anything") is None
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", "import pathlib, sys, time; "
                             "pathlib.Path(sys.argv[1], 'ready').touch(); time.sleep(30)",
                             str(tmp_path)])
    try:
        # Right after Popen the child may not have exec'd yet (its cmdline is still the
        # parent's): wait until the new program runs.
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        pidfile.write_text(f"{proc.pid}\n")
        found = find_process(pidfile, str(tmp_path))
        assert found is not None and found.pid == proc.pid
        assert find_process(pidfile, "not-in-cmdline") is None  # a recycled pid is not ours
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert find_process(pidfile, str(tmp_path)) is None


@pytest.mark.parametrize(("text", "unit", "mib"), [
    ("2048", "m", 2048), ("2G", "m", 2048), ("512MiB", "m", 512), ("64", "g", 65536),
    ("64g", "g", 65536), ("1T", "g", 1024 * 1024),
])
def test_size_parsing(text: str, unit: str, mib: int) -> None:
    assert size_mib(text, unit) == mib


def test_size_parsing_rejects_garbage() -> None:
    with pytest.raises(typer.BadParameter):
        size_mib("lots", "m")


def test_start_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path: Path) -> None:
    from pydesk.vm.errors import Conflict
    from pydesk.vm.lifecycle import start_lock

    files = instance_files("default", tmp_path)
    with start_lock(files):
        assert files.lock.read_text().strip() == str(os.getpid())
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            files.lock.write_text(f"{other.pid}\n")  # held by another live starter
            with pytest.raises(Conflict, match="another 'pydesk vm start'"), start_lock(files):
                pass
        finally:
            other.kill()
            other.wait()
        with start_lock(files):  # its starter is gone: taken over
            pass
    assert not files.lock.exists()
