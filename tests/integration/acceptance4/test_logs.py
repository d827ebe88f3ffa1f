"""docker logs: -f (follows until the container stops), --tail, --since, -t; stdout and stderr
kept apart."""

from __future__ import annotations

import subprocess
import time

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import Pydeskd


def test_logs_tail_timestamps_streams(d: Pydeskd) -> None:
    d.docker("run", "--name", "lg", BUSYBOX, "sh", "-c",
             "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done")
    done = d.docker("logs", "lg")
    assert done.stdout == b"".join(b"out%d\n" % i for i in range(1, 6))
    assert done.stderr == b"".join(b"err%d\n" % i for i in range(1, 6))
    # The two pipes are read apart, so their order in the log is not the writes' order:
    # --tail is checked on a container writing to stdout only.
    d.docker("run", "--name", "tl", BUSYBOX, "sh", "-c", "for i in 1 2 3 4 5; do echo $i; done")
    assert d.docker("logs", "--tail", "2", "tl").stdout == b"4\n5\n"
    assert d.docker("logs", "--tail", "0", "tl").stdout == b""
    assert d.docker("logs", "--tail", "all", "tl").stdout == b"1\n2\n3\n4\n5\n"
    stamped = out(d, "logs", "-t", "--tail", "1", "tl").split(" ")
    assert stamped[1] == "5" and stamped[0].endswith("Z") and "T" in stamped[0]


def test_logs_since(d: Pydeskd) -> None:
    d.docker("run", "-d", "--name", "sn", BUSYBOX, "sh", "-c",
             "echo early; sleep 2; echo late; sleep 60")
    time.sleep(1)
    mark = time.time()
    deadline = time.monotonic() + 20
    while b"late" not in d.docker("logs", "sn").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.docker("logs", "--since", f"{mark:.3f}", "sn").stdout == b"late\n"
    assert d.docker("logs", "--since", "1h", "sn").stdout == b"early\nlate\n"
    assert d.docker("logs", "--since", "2099-01-01T00:00:00Z", "sn").stdout == b""


def test_logs_follow(d: Pydeskd) -> None:
    d.docker("run", "-d", "--name", "fl", BUSYBOX, "sh", "-c",
             "echo a; sleep 1; echo b; sleep 1; echo c")
    t0 = time.monotonic()
    follower = d.popen_docker("logs", "-f", "fl", stdout=subprocess.PIPE)
    got, _ = follower.communicate(timeout=30)
    assert got == b"a\nb\nc\n" and follower.returncode == 0
    assert time.monotonic() - t0 >= 1  # it followed, not just read what was there
    # --tail with -f: the last line, then whatever comes.
    d.docker("run", "-d", "--name", "fl2", BUSYBOX, "sh", "-c",
             "echo 1; echo 2; sleep 1; echo 3")
    time.sleep(0.5)
    follower = d.popen_docker("logs", "-f", "--tail", "1", "fl2", stdout=subprocess.PIPE)
    assert follower.communicate(timeout=30)[0] == b"2\n3\n"
