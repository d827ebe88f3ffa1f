"""docker exec: plain, -it through a pty, -d, -e, -u, -w, exit codes and errors."""

from __future__ import annotations

import os
import time

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import DOCKER, Pydeskd
from tests.support.terminal import read_until, under_pty


def test_exec_options(d: Pydeskd) -> None:
    out(d, "run", "-d", "--name", "ex", "-e", "FROM_RUN=1", BUSYBOX, "sleep", "60")
    assert out(d, "exec", "ex", "echo", "hi") == "hi"
    assert d.docker("exec", "ex", "sh", "-c", "exit 7", check=False).returncode == 7
    env = out(d, "exec", "-e", "X=y", "ex", "env").splitlines()
    assert "X=y" in env and "FROM_RUN=1" in env
    assert out(d, "exec", "-u", "1000:1000", "ex", "id") == "uid=1000 gid=1000 groups=1000"
    assert out(d, "exec", "-u", "nobody", "ex", "id", "-un") == "nobody"
    assert out(d, "exec", "-w", "/etc", "ex", "sh", "-c", "pwd") == "/etc"
    assert d.docker("exec", "-i", "ex", "sh", "-c", "tr a-z A-Z",
                    input=b"stdin\n").stdout == b"STDIN\n"
    missing = d.docker("exec", "ex", "nosuchcmd", check=False)
    assert missing.returncode == 127
    # A missing working directory is not a missing command: 126, as Docker.
    no_dir = d.docker("exec", "-w", "/no/such/dir", "ex", "true", check=False)
    # (Docker writes the error into the hijacked stream: the CLI prints it on stdout.)
    assert no_dir.returncode == 126 and b"/no/such/dir" in no_dir.stdout + no_dir.stderr
    out(d, "exec", "-d", "ex", "sh", "-c", "sleep 1; echo detached > /tmp/d")
    deadline = time.monotonic() + 20
    while d.docker("exec", "ex", "cat", "/tmp/d", check=False).stdout != b"detached\n":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    out(d, "stop", "-t", "1", "ex")
    stopped = d.docker("exec", "ex", "true", check=False)
    assert stopped.returncode != 0 and b"is not running" in stopped.stderr


def test_exec_interactive_tty(d: Pydeskd) -> None:
    out(d, "run", "-d", "--name", "exi", BUSYBOX, "sleep", "60")
    with under_pty([DOCKER, "exec", "-it", "exi", "sh"], d.env()) as (proc, primary):
        assert b"#" in read_until(primary, b"# ")
        os.write(primary, b"echo $((20+3))\r")
        assert b"23" in read_until(primary, b"23\r\n")
        os.write(primary, b"exit 5\r")
        assert proc.wait(timeout=20) == 5
