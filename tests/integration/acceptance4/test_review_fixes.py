"""Regressions from the daemon review: docker kill ends a restart policy as moby's does, exec
--privileged works, container names are checked whole."""

from __future__ import annotations

import time

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import Pydeskd


def status(d: Pydeskd, name: str) -> str:
    return out(d, "inspect", "--format", "{{.State.Status}}", name)


def test_kill_of_a_restart_always_container_leaves_it_exited(d: Pydeskd) -> None:
    out(d, "run", "-d", "--name", "ka", "--restart", "always", BUSYBOX, "sleep", "600")
    out(d, "kill", "ka")
    time.sleep(1.5)  # longer than the first restart delay (100 ms)
    assert status(d, "ka") == "exited"
    assert out(d, "inspect", "--format", "{{.RestartCount}}", "ka") == "0"


def test_docker_kill_returns_once_the_container_is_down(d: Pydeskd) -> None:
    # moby's Kill waits for the exit after SIGKILL: `docker kill C && docker rm C` works.
    for n in range(5):
        out(d, "run", "-d", "--name", f"kd{n}", BUSYBOX, "sleep", "600")
        out(d, "kill", f"kd{n}")
        assert status(d, f"kd{n}") == "exited"
        out(d, "rm", f"kd{n}")


def test_kill_with_another_signal_than_a_named_stop_signal_keeps_the_policy(d: Pydeskd) -> None:
    # PID 1 of a namespace ignores signals it has no handler for: trap TERM to exit.
    out(d, "run", "-d", "--name", "kb", "--restart", "always", "--stop-signal", "USR1",
        BUSYBOX, "sh", "-c", "trap 'exit 1' TERM; sleep 600 & wait")
    out(d, "kill", "-s", "TERM", "kb")  # not the stop signal: moby keeps the policy
    deadline = time.monotonic() + 20
    while out(d, "inspect", "--format", "{{.RestartCount}}", "kb") == "0":
        assert time.monotonic() < deadline, "the container was not restarted"
        time.sleep(0.2)
    out(d, "rm", "-f", "kb")


def test_exec_privileged(d: Pydeskd) -> None:
    out(d, "run", "-d", "--name", "ep", BUSYBOX, "sleep", "600")
    caps = out(d, "exec", "--privileged", "ep", "sh", "-c", "grep CapEff /proc/self/status")
    plain = out(d, "exec", "ep", "sh", "-c", "grep CapEff /proc/self/status")
    assert int(caps.split()[1], 16) > int(plain.split()[1], 16)


def test_a_name_with_a_trailing_newline_is_refused(d: Pydeskd) -> None:
    done = d.docker("create", "--name", "nl\n", BUSYBOX, "true", check=False)
    assert done.returncode != 0 and b"Invalid container name" in done.stderr
