"""Finding an instance's agent and QEMU by pid file and command line: the marker must be a
whole argument, so instance ``dev`` never takes instance ``dev2``'s process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydesk.agent.process import agent_argv, find_agent, find_process, find_qemu, has_argument
from pydesk.vm.instance import InstanceFiles

SLEEP = [sys.executable, "-c", "import time; time.sleep(30)"]


def test_has_argument_matches_whole_arguments_only() -> None:
    assert has_argument(["python", "--instance-dir", "/h/dev"], "/h/dev")
    assert not has_argument(["python", "--instance-dir", "/h/dev2"], "/h/dev")
    assert not has_argument(["python", "--instance-dir=/h/dev"], "/h/dev")
    assert not has_argument(["qemu", "-pidfile", "/h/dev2/qemu.pid"], "/h/dev/qemu.pid")
    assert not has_argument([], "/h/dev")


def _spawn(argv_tail: list[str]) -> subprocess.Popen[bytes]:
    """A sleeper with ``argv_tail``, once exec'd (between fork and exec the child still shows
    this process's command line)."""
    import psutil  # type: ignore[import-untyped]

    proc = subprocess.Popen([*SLEEP, *argv_tail])
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).cmdline()[-len(argv_tail):] != argv_tail:
        assert time.monotonic() < deadline, "the sleeper never exec'd"
        time.sleep(0.01)
    return proc


def test_a_sibling_instance_with_a_prefix_name_is_not_ours(tmp_path: Path) -> None:
    dev, dev2 = InstanceFiles(tmp_path / "dev"), InstanceFiles(tmp_path / "dev2")
    for files in (dev, dev2):
        files.dir.mkdir()
    # dev2's agent and QEMU, and dev's pid files naming them (recycled pids, or a copied dir)
    agent2 = _spawn(agent_argv(dev2)[1:])
    qemu2 = _spawn(["-pidfile", str(dev2.qemu_pid)])
    try:
        dev.agent_pid.write_text(f"{agent2.pid}\n")
        dev.qemu_pid.write_text(f"{qemu2.pid}\n")
        dev2.agent_pid.write_text(f"{agent2.pid}\n")
        dev2.qemu_pid.write_text(f"{qemu2.pid}\n")
        assert find_agent(dev) is None
        assert find_qemu(dev) is None
        found_agent, found_qemu = find_agent(dev2), find_qemu(dev2)
        assert found_agent is not None and found_agent.pid == agent2.pid
        assert found_qemu is not None and found_qemu.pid == qemu2.pid
        assert find_process(dev2.agent_pid, str(tmp_path / "dev")) is None
    finally:
        for proc in (agent2, qemu2):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
