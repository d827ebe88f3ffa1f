"""stop/start/restart/kill/rm -f, wait, pause/unpause and --restart always through the CLI."""

from __future__ import annotations

import subprocess
import time

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import Pydeskd


def _status(d: Pydeskd, name: str) -> str:
    return out(d, "inspect", "--format", "{{.State.Status}}", name)


def test_stop_start_restart_kill_rm(d: Pydeskd) -> None:
    # PID 1 of a namespace gets only the signals it handles: the traps make TERM and USR1
    # end it (as a real service would), with codes that say which one came.
    out(d, "run", "-d", "--name", "lc", BUSYBOX, "sh", "-c",
        "trap 'exit 143' TERM; trap 'exit 138' USR1; while true; do sleep 0.1; done")
    time.sleep(0.3)
    pid1 = out(d, "inspect", "--format", "{{.State.Pid}}", "lc")
    t0 = time.monotonic()
    assert out(d, "stop", "-t", "5", "lc") == "lc"
    assert time.monotonic() - t0 < 4  # TERM ended it, no kill after the timeout
    assert out(d, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "lc") == \
        "exited 143"
    assert out(d, "start", "lc") == "lc" and _status(d, "lc") == "running"
    assert out(d, "inspect", "--format", "{{.State.Pid}}", "lc") != pid1
    # A trap that ignores TERM: stop waits its timeout, then kills.
    out(d, "run", "-d", "--name", "stubborn", BUSYBOX, "sh", "-c",
        "trap '' TERM; while true; do sleep 0.1; done")
    time.sleep(0.3)
    t0 = time.monotonic()
    out(d, "stop", "-t", "1", "stubborn")
    assert 0.9 < time.monotonic() - t0 < 8
    assert out(d, "inspect", "--format", "{{.State.ExitCode}}", "stubborn") == "137"
    started = out(d, "inspect", "--format", "{{.State.StartedAt}}", "lc")
    assert out(d, "restart", "-t", "1", "lc") == "lc"
    assert _status(d, "lc") == "running"
    assert out(d, "inspect", "--format", "{{.State.StartedAt}}", "lc") != started
    time.sleep(0.3)
    assert out(d, "kill", "-s", "USR1", "lc") == "lc"
    deadline = time.monotonic() + 10
    while _status(d, "lc") != "exited":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert out(d, "inspect", "--format", "{{.State.ExitCode}}", "lc") == "138"
    not_running = d.docker("kill", "lc", check=False)
    assert not_running.returncode == 1 and b"is not running" in not_running.stderr
    out(d, "start", "lc")
    refused = d.docker("rm", "lc", check=False)
    assert refused.returncode == 1 and b"stop the container before removing" in refused.stderr
    assert out(d, "rm", "-f", "lc", "stubborn") == "lc\nstubborn"
    assert out(d, "ps", "-aq") == ""
    missing = d.docker("stop", "lc", check=False)
    assert missing.returncode == 1 and b"No such container: lc" in missing.stderr


def test_wait(d: Pydeskd) -> None:
    out(d, "run", "-d", "--name", "w1", BUSYBOX, "sh", "-c", "sleep 1; exit 9")
    out(d, "run", "-d", "--name", "w2", BUSYBOX, "sh", "-c", "sleep 2; exit 4")
    assert out(d, "wait", "w1", "w2") == "9\n4"
    assert out(d, "wait", "w1") == "9"  # already exited: at once
    missing = d.docker("wait", "nosuch", check=False)
    assert missing.returncode == 1 and b"No such container" in missing.stderr


def test_pause_unpause(d: Pydeskd) -> None:
    out(d, "run", "-d", "--name", "pz", BUSYBOX, "sh", "-c",
        # Written aside and renamed: a reader never sees the file just truncated.
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; "
        "sleep 0.05; done")
    time.sleep(0.3)
    assert out(d, "pause", "pz") == "pz"
    assert _status(d, "pz") == "paused"
    assert "Paused" in out(d, "ps", "--format", "{{.Status}}")
    refused = d.docker("exec", "pz", "true", check=False)
    assert refused.returncode != 0 and b"is paused" in refused.stderr
    assert out(d, "unpause", "pz") == "pz" and _status(d, "pz") == "running"
    first = out(d, "exec", "pz", "cat", "/tmp/n")
    time.sleep(0.3)
    assert int(out(d, "exec", "pz", "cat", "/tmp/n")) > int(first)
    again = d.docker("unpause", "pz", check=False)
    assert again.returncode == 1 and b"is not paused" in again.stderr
    out(d, "pause", "pz")
    assert out(d, "rm", "-f", "pz") == "pz"  # a paused container can be force-removed


def test_restart_always_recovers_a_killed_process(d: Pydeskd) -> None:
    out(d, "run", "-d", "--name", "ra", "--restart", "always", BUSYBOX, "sleep", "60")
    pid = int(out(d, "inspect", "--format", "{{.State.Pid}}", "ra"))
    subprocess.run(["kill", "-9", str(pid)], check=True)  # from the host, as a crash
    deadline = time.monotonic() + 20
    while True:
        state = out(d, "inspect", "--format",
                    "{{.State.Status}} {{.RestartCount}} {{.State.Pid}}", "ra").split()
        if state[0] == "running" and state[1] == "1":
            assert int(state[2]) != pid
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    out(d, "stop", "-t", "1", "ra")  # an explicit stop is not undone by the policy
    time.sleep(1.5)
    assert _status(d, "ra") == "exited"
