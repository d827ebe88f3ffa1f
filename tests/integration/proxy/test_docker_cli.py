"""The official docker CLI through the proxy: run (--rm, -i from a pipe, -it under a pty), logs -f,
exec -it, cp both ways, pull with progress, events streaming."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

from tests.integration.proxy.conftest import BUSYBOX, Proxied
from tests.support.pydeskd import DOCKER
from tests.support.terminal import read_until, under_pty


def test_run_rm_passes_output_and_exit_code(p: Proxied) -> None:
    done = p.docker("run", "--rm", BUSYBOX, "sh", "-c", "echo out; echo err >&2; exit 3",
                    check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    assert p.out("ps", "-aq") == ""


def test_run_interactive_stdin_from_a_pipe_ends_at_eof(p: Proxied, tmp_path: Path) -> None:
    # The CLI half-closes the hijacked connection after stdin: the proxy must pass that on, or
    # tr never sees EOF and the command hangs (the timeout fails the test).
    data = b"".join(b"line %d\n" % i for i in range(20000))  # ~200 KB: several reads
    source = tmp_path / "in.txt"
    source.write_bytes(data)
    with source.open("rb") as stdin:
        done = subprocess.run([DOCKER, "run", "-i", "--rm", BUSYBOX, "sh", "-c",
                               "tr a-z A-Z; exit 4"], stdin=stdin, capture_output=True,
                              env=p.env(), timeout=60, check=False)
    assert done.returncode == 4, done.stderr
    assert done.stdout == data.upper()


def test_run_interactive_echoes_a_large_stream_both_ways(p: Proxied, tmp_path: Path) -> None:
    """20 MB in while 20 MB come out: the two directions must not wait on each other."""
    # No 0x10 byte: pydeskd scans a non-tty stdin for the detach keys (ctrl-p ctrl-q) too,
    # which random data would hit (moby scans only with a tty) -- a daemon matter, not ours.
    data = os.urandom(20 * 1024 * 1024).replace(b"\x10", b"p")
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    with source.open("rb") as stdin:
        done = subprocess.run([DOCKER, "run", "-i", "--rm", BUSYBOX, "cat"], stdin=stdin,
                              capture_output=True, env=p.env(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == len(data) and done.stdout == data


def test_save_and_load_stream_through(p: Proxied, tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    p.docker("save", "-o", str(archive), BUSYBOX, timeout=120)
    assert tarfile.is_tarfile(archive)
    p.out("tag", BUSYBOX, "pxcopy:1")
    p.out("rmi", "pxcopy:1")
    loaded = p.docker("load", "-i", str(archive), timeout=120).stdout.decode()
    assert "Loaded image" in loaded, loaded


def test_run_interactive_tty(p: Proxied) -> None:
    with under_pty([DOCKER, "run", "-it", "--rm", BUSYBOX, "sh"], p.env()) as (proc, primary):
        assert b"#" in read_until(primary, b"# ")
        os.write(primary, b"echo $((6*7)) $(tty)\r")
        assert b"42 /dev/pts/0" in read_until(primary, b"42 /dev/pts/0")
        os.write(primary, b"exit 3\r")
        assert proc.wait(timeout=20) == 3


def test_logs_follow_ends_when_the_container_exits(p: Proxied) -> None:
    p.out("run", "-d", "--name", "lf", BUSYBOX, "sh", "-c",
          "for i in 1 2 3; do echo tick $i; sleep 0.3; done")
    started = time.monotonic()
    done = p.docker("logs", "-f", "lf", timeout=30)
    assert done.stdout == b"tick 1\ntick 2\ntick 3\n"
    assert time.monotonic() - started < 20


def test_exec_interactive_tty(p: Proxied) -> None:
    p.out("run", "-d", "--name", "exi", BUSYBOX, "sleep", "60")
    assert p.out("exec", "exi", "echo", "plain") == "plain"
    with under_pty([DOCKER, "exec", "-it", "exi", "sh"], p.env()) as (proc, primary):
        assert b"#" in read_until(primary, b"# ")
        os.write(primary, b"echo $((20+3))\r")
        assert b"23" in read_until(primary, b"23\r\n")
        os.write(primary, b"exit 5\r")
        assert proc.wait(timeout=20) == 5
    assert p.docker("exec", "-i", "exi", "sh", "-c", "tr a-z A-Z",
                    input=b"stdin\n").stdout == b"STDIN\n"


def test_cp_both_ways(p: Proxied, tmp_path: Path) -> None:
    p.out("run", "-d", "--name", "cpc", BUSYBOX, "sleep", "60")
    payload = os.urandom(3 * 1024 * 1024)
    (tmp_path / "up.bin").write_bytes(payload)
    p.out("cp", str(tmp_path / "up.bin"), "cpc:/tmp/up.bin")
    # Read back through an exec's multiplexed stream: 3 MB of frames through the proxy.
    assert p.docker("exec", "cpc", "cat", "/tmp/up.bin").stdout == payload
    p.out("exec", "cpc", "sh", "-c", "mkdir -p /d/sub && echo inner > /d/sub/f")
    p.out("cp", "cpc:/d", str(tmp_path / "down"))
    assert (tmp_path / "down" / "sub" / "f").read_text() == "inner\n"
    # To stdout as a tar stream (an until-close or chunked body through the proxy).
    tar_path = tmp_path / "out.tar"
    tar_path.write_bytes(p.docker("cp", "cpc:/tmp/up.bin", "-").stdout)
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile("up.bin")
        assert member is not None and member.read() == payload


def test_pull_shows_progress(p: Proxied) -> None:
    p.out("rmi", BUSYBOX)
    try:
        done = p.docker("pull", BUSYBOX, timeout=120)
        text = done.stdout.decode()
        assert "Pull complete" in text and "Downloaded newer image" in text, text
    finally:
        p.daemon.docker("pull", "-q", BUSYBOX)


def test_events_stream_while_commands_run(p: Proxied) -> None:
    watcher = p.popen("events", "--filter", "container=evp", "--format", "{{json .}}",
                      stdout=subprocess.PIPE)
    try:
        time.sleep(0.5)
        p.out("run", "--name", "evp", BUSYBOX, "true")
        p.out("rm", "evp")
        assert watcher.stdout is not None
        actions = []
        deadline = time.monotonic() + 20
        while "destroy" not in actions and time.monotonic() < deadline:
            line = watcher.stdout.readline()
            if not line:
                break
            actions.append(json.loads(line)["Action"])
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert actions[0] == "create", actions
    assert {"start", "die", "destroy"} <= set(actions), actions
