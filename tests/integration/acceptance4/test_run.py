"""docker run as issue 4 lists it: -d, --rm exit codes, -it through a pty, and the options that
shape the process (--user, --workdir, --entrypoint, --env-file, --read-only, --cap-drop ALL,
--memory, --pids-limit)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import DOCKER, Pydeskd
from tests.support.terminal import read_until, under_pty


def test_run_detached_prints_the_id_and_runs(d: Pydeskd) -> None:
    cid = out(d, "run", "-d", "--name", "det", BUSYBOX, "sleep", "60")
    assert len(cid) == 64 and all(ch in "0123456789abcdef" for ch in cid)
    assert out(d, "inspect", "--format", "{{.State.Status}} {{.Name}}", "det") == \
        "running /det"


def test_run_rm_passes_exit_codes_and_leaves_nothing(d: Pydeskd) -> None:
    for code in (0, 1, 3, 42, 255):
        done = d.docker("run", "--rm", BUSYBOX, "sh", "-c", f"echo hi; exit {code}",
                        check=False)
        assert (done.returncode, done.stdout) == (code, b"hi\n")
    # Killed by a signal: 128 + the signal (the init of a PID namespace ignores its own
    # kill -9, so the container's sh is killed from outside with docker kill).
    d.docker("run", "-d", "--name", "victim", BUSYBOX, "sleep", "60")
    waiter = d.popen_docker("wait", "victim", stdout=subprocess.PIPE)
    d.docker("kill", "victim")
    assert waiter.communicate(timeout=30)[0] == b"137\n"
    d.docker("rm", "victim")
    assert out(d, "ps", "-aq") == ""


def test_run_interactive_tty(d: Pydeskd) -> None:
    """docker run -it under a real terminal: type into sh, read its answer, exit 3 -> 3."""
    with under_pty([DOCKER, "run", "-it", "--rm", BUSYBOX, "sh"], d.env()) as (proc, primary):
        assert b"#" in read_until(primary, b"# ")
        os.write(primary, b"echo $((6*7)) $(tty)\r")
        assert b"42 /dev/pts/0" in read_until(primary, b"42 /dev/pts/0")
        os.write(primary, b"exit 3\r")
        assert proc.wait(timeout=20) == 3


def test_run_interactive_without_tty_pipes_stdin(d: Pydeskd) -> None:
    done = d.docker("run", "-i", "--rm", BUSYBOX, "sh", "-c", "tr a-z A-Z; exit 4",
                    input=b"hello\n", check=False)
    assert (done.returncode, done.stdout) == (4, b"HELLO\n")


def test_user_workdir_entrypoint_env_file(d: Pydeskd, tmp_path: Path) -> None:
    assert out(d, "run", "--rm", "--user", "1234:5678", BUSYBOX, "id") == \
        "uid=1234 gid=5678 groups=5678"
    assert out(d, "run", "--rm", "--user", "nobody", BUSYBOX, "id", "-un") == "nobody"
    assert out(d, "run", "--rm", "--workdir", "/made/here", BUSYBOX, "sh", "-c",
               "pwd") == "/made/here"
    assert out(d, "run", "--rm", "--entrypoint", "echo", BUSYBOX, "via", "entry") == \
        "via entry"
    assert out(d, "run", "--rm", "--entrypoint", "", BUSYBOX, "echo", "reset") == "reset"
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\nFOO=bar baz\nEMPTY=\nPASSED\n")
    env = out(d, "run", "--rm", "--env-file", str(env_file), "-e", "X=1", BUSYBOX, "env")
    lines = env.splitlines()
    assert "FOO=bar baz" in lines and "EMPTY=" in lines and "X=1" in lines
    assert not any(line.startswith("PASSED") for line in lines)  # unset here: left out


def test_read_only_and_cap_drop(d: Pydeskd) -> None:
    done = d.docker("run", "--rm", "--read-only", BUSYBOX, "touch", "/x", check=False)
    assert done.returncode == 1 and b"Read-only file system" in done.stderr
    assert out(d, "run", "--rm", "--read-only", "--tmpfs", "/tmp", BUSYBOX, "sh", "-c",
               "touch /tmp/x && echo ok") == "ok"
    done = d.docker("run", "--rm", "--cap-drop", "ALL", BUSYBOX, "busybox", "chown", "1",
                    "/tmp", check=False)
    assert done.returncode == 1 and b"Operation not permitted" in done.stderr
    assert out(d, "run", "--rm", "--cap-drop", "ALL", BUSYBOX, "sh", "-c",
               "grep CapEff /proc/self/status") == "CapEff:\t0000000000000000"
    assert d.docker("run", "--rm", BUSYBOX, "busybox", "chown", "1", "/tmp").returncode == 0


def test_memory_and_pids_limit_enforced(d: Pydeskd) -> None:
    done = d.docker("run", "--rm", "--pids-limit", "5", BUSYBOX, "sh", "-c",
                    "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait", check=False)
    assert done.returncode != 0 and b"can't fork" in done.stderr
    done = d.docker("run", "--name", "oom", "--memory", "16m", BUSYBOX, "sh", "-c",
                    "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived", check=False)
    assert done.returncode == 137 and b"survived" not in done.stdout
    assert out(d, "inspect", "--format", "{{.State.OOMKilled}} {{.HostConfig.Memory}}",
               "oom") == f"true {16 << 20}"
    assert out(d, "run", "--rm", "--memory", "32m", BUSYBOX, "sh", "-c",
               "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
               "cat /sys/fs/cgroup/memory/memory.limit_in_bytes") == str(32 << 20)


def test_detach_keys_and_attach_again(d: Pydeskd) -> None:
    """ctrl-p ctrl-q leaves a `docker run -it` running; `docker attach` takes it up again."""
    with under_pty([DOCKER, "run", "-it", "--name", "detached", BUSYBOX, "sh"],
                   d.env()) as (proc, primary):
        assert b"#" in read_until(primary, b"# ")
        os.write(primary, b"\x10\x11")  # ctrl-p ctrl-q
        assert proc.wait(timeout=20) == 0
    assert out(d, "inspect", "--format", "{{.State.Running}}", "detached") == "true"
    with under_pty([DOCKER, "attach", "detached"], d.env()) as (proc, primary):
        time.sleep(0.5)
        os.write(primary, b"echo back-$((2*4))\r")
        assert b"back-8" in read_until(primary, b"back-8")
        os.write(primary, b"exit 3\r")
        assert proc.wait(timeout=20) == 3
    assert out(d, "inspect", "--format", "{{.State.ExitCode}}", "detached") == "3"


def test_init_runs_tini_as_pid_1(d: Pydeskd) -> None:
    lines = out(d, "run", "--rm", "--init", BUSYBOX, "ps", "-o", "pid,args").splitlines()
    assert any(line.split()[:2] == ["1", "/sbin/docker-init"] for line in lines), lines


def test_privileged_gets_what_the_daemon_holds(d: Pydeskd) -> None:
    with open("/proc/self/status") as status:
        mine = next(int(line.split()[1], 16) for line in status if line.startswith("CapBnd:"))
    inside = out(d, "run", "--rm", "--privileged", BUSYBOX, "sh", "-c",
                 "grep CapEff /proc/self/status")
    assert int(inside.split()[1], 16) == mine
