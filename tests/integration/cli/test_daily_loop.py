"""The ``pydesk`` CLI's daily loop against a real pydeskd: pull, run -d -p, ps, logs, exec,
port, stop/start/restart/rm, inspect -f, open --print, images/rmi, run --rm exit codes."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.integration.cli.conftest import PYDESK, env, pydesk
from tests.support.pydeskd import Pydeskd

BUSYBOX = "busybox:latest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pull_quiet_then_images_and_run_rm_exit_code(d: Pydeskd) -> None:
    assert pydesk(d, "pull", "-q", BUSYBOX).stdout.strip() == BUSYBOX
    lines = pydesk(d, "images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(line.split()[:2] == ["busybox", "latest"] for line in lines[1:])
    done = pydesk(d, "run", "--rm", BUSYBOX, "sh", "-c", "echo out; echo err >&2; exit 7",
                  check=False)
    assert (done.returncode, done.stdout, done.stderr) == (7, "out\n", "err\n")
    assert pydesk(d, "ps", "-aq").stdout == ""


def test_run_failures_are_125_and_one_line(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    done = pydesk(d, "run", "--rm", "-p", "notaport", BUSYBOX, "true", check=False)
    assert done.returncode == 125 and "invalid publish spec" in done.stderr
    done = pydesk(d, "run", "--rm", "--network", "pdcli-absent", BUSYBOX, "true", check=False)
    assert done.returncode == 125
    assert done.stderr.startswith("Error response from daemon:")
    assert len(done.stderr.strip().splitlines()) == 1
    done = pydesk(d, "run", "--rm", "pdcli-no-such-image", "true", check=False)
    assert done.returncode == 125 and "Unable to find image" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error response from daemon:")
    done = pydesk(d, "stop", "pdcli-absent", check=False)
    assert done.returncode == 1 and "Error response from daemon" in done.stderr


def test_the_daily_loop(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    port = free_port()
    ident = pydesk(d, "run", "-d", "--name", "pdcli-web", "-p", f"127.0.0.1:{port}:80",
                   "-e", "GREETING=hello", "-w", "/tmp", BUSYBOX, "sh", "-c",
                   "echo $GREETING > /tmp/index.html; echo started; "
                   "exec httpd -f -p 80 -h /tmp").stdout.strip()
    assert len(ident) == 64
    ps = pydesk(d, "ps").stdout.splitlines()
    assert ps[0].split("   ")[0] == "CONTAINER ID"
    row = next(line for line in ps if line.startswith(ident[:12]))
    assert f"127.0.0.1:{port}->80/tcp" in row and row.endswith("pdcli-web")
    assert "Up" in row
    assert pydesk(d, "ps", "-q").stdout.split() == [ident[:12]]
    assert pydesk(d, "ps", "-q", "--filter", "name=nomatch").stdout == ""

    deadline = time.monotonic() + 10
    while "started" not in pydesk(d, "logs", "pdcli-web").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert pydesk(d, "logs", "-t", "--tail", "1", "pdcli-web").stdout.rstrip().endswith(
        "started")
    assert pydesk(d, "port", "pdcli-web").stdout == f"80/tcp -> 127.0.0.1:{port}\n"
    assert pydesk(d, "port", "pdcli-web", "80").stdout == f"127.0.0.1:{port}\n"
    url = pydesk(d, "open", "--print", "pdcli-web").stdout.strip()
    assert url == f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"{url}/index.html", timeout=2) as page:
                assert page.read() == b"hello\n"
                break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)

    done = pydesk(d, "exec", "-e", "X=4", "-w", "/etc", "pdcli-web", "sh", "-c",
                  "pwd; echo $X; exit $X", check=False)
    assert (done.returncode, done.stdout) == (4, "/etc\n4\n")
    assert pydesk(d, "inspect", "-f", "{{.State.Status}} {{.Name}}",
                  "pdcli-web").stdout == "running /pdcli-web\n"
    assert json.loads(pydesk(d, "inspect", "pdcli-web").stdout)[0]["Id"] == ident

    done = pydesk(d, "exec", "pdcli-web", "pdcli-no-such-command", check=False)
    assert done.returncode == 127 and "not found" in done.stdout + done.stderr
    assert pydesk(d, "stop", "-t", "1", "pdcli-web").stdout == "pdcli-web\n"
    done = pydesk(d, "exec", "pdcli-web", "true", check=False)
    assert done.returncode == 1 and done.stderr.startswith("Error response from daemon:")
    assert "Exited" in pydesk(d, "ps", "-a").stdout
    assert pydesk(d, "ps", "-q").stdout == ""
    assert pydesk(d, "start", "pdcli-web").stdout == "pdcli-web\n"
    assert pydesk(d, "restart", "-t", "1", "pdcli-web").stdout == "pdcli-web\n"
    assert pydesk(d, "inspect", "-f", "{{.State.Running}}", "pdcli-web").stdout == "true\n"
    done = pydesk(d, "rm", "pdcli-web", check=False)
    assert done.returncode == 1 and "Error response from daemon" in done.stderr
    assert pydesk(d, "rm", "-f", "-v", "pdcli-web").stdout == "pdcli-web\n"
    assert pydesk(d, "ps", "-aq").stdout == ""


def test_pull_progress_and_rmi(d: Pydeskd) -> None:
    pydesk(d, "rmi", "-f", BUSYBOX, check=False)
    done = pydesk(d, "pull", BUSYBOX)
    assert done.stdout.strip() == BUSYBOX
    assert "Status:" in done.stderr
    removed = pydesk(d, "rmi", BUSYBOX).stdout
    assert "Untagged:" in removed
    assert not any(line.startswith("busybox ") for line in pydesk(d, "images").stdout.splitlines())
    done = pydesk(d, "rmi", BUSYBOX, check=False)
    assert done.returncode == 1 and "Error response from daemon" in done.stderr
    # run pulls a missing image itself
    done = pydesk(d, "run", "--rm", BUSYBOX, "echo", "pulled")
    assert done.stdout == "pulled\n" and "Unable to find image" in done.stderr


def without_ages(table: str) -> str:
    """A table with its ages and column widths out (they move between two runs)."""
    table = re.sub(r"(Less than a second|About a minute|\d+ \w+)( ago)?", "AGE", table)
    return re.sub(r" {3,}", "|", table)


def test_fast_path_prints_what_typer_prints(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    pydesk(d, "run", "-d", "--name", "pdcli-fast", BUSYBOX, "sleep", "60")
    for args in (["ps"], ["ps", "-a"], ["ps", "-q", "--filter", "name=pdcli-fast"],
                 ["images"], ["images", "-q"]):
        fast = without_ages(pydesk(d, *args).stdout)
        # --debug is not on the fast path: the same command through Typer.
        assert without_ages(pydesk(d, "--debug", *args).stdout) == fast, args
    assert "pdcli-fast" in pydesk(d, "ps").stdout
    done = pydesk(d, "ps", "--filter", "bogus=1", check=False)
    assert done.returncode == 1 and done.stderr.startswith("Error response from daemon:")


def plain(argv: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``pydesk ARGV`` with no -H: the engine comes from the environment given."""
    return subprocess.run([str(PYDESK), *argv], env=environ, capture_output=True, text=True,
                          check=False, timeout=60)


def test_engine_selection_from_env_and_config(d: Pydeskd, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".pydesk").mkdir(parents=True)
    base = {**env(), "HOME": str(home)}
    with_env = {**base, "PYDESK_HOST": d.host}
    assert plain(["engine", "which"], with_env).stdout == f"{d.host}\t(env)\n"
    done = plain(["ps", "-q"], with_env)
    assert done.returncode == 0, done.stderr
    assert plain(["engine", "env"], with_env).stdout == f"export DOCKER_HOST={d.host}\n"
    # VM mode from the configuration, and no VM socket under this HOME: one line and a hint.
    (home / ".pydesk" / "config.json").write_text('{"mode": "vm"}')
    for argv in (["ps"], ["volume", "ls"], ["engine", "which"]):
        done = plain(argv, base)
        assert done.returncode == 1
        assert done.stderr == (f"no engine: {home}/.pydesk/run/docker.sock does not answer\n"
                               "hint: start the VM: `pydesk vm start`\n"), argv
    # The flag beats the configuration.
    assert plain(["-H", d.host, "ps", "-q"], base).returncode == 0


def test_logs_keeps_stdout_and_stderr_apart_and_follows(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    pydesk(d, "run", "-d", "--name", "pdcli-logs", BUSYBOX, "sh", "-c",
           "echo out1; echo err1 >&2; sleep 1; echo out2")
    follow = subprocess.Popen([str(PYDESK), "-H", d.host, "logs", "-f", "pdcli-logs"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        out, err = follow.communicate(timeout=20)  # -f ends when the container exits
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert (follow.returncode, out, err) == (0, b"out1\nout2\n", b"err1\n")
    assert pydesk(d, "logs", "--tail", "1", "pdcli-logs").stdout == "out2\n"


def test_ctrl_c_reaches_the_container(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    run = subprocess.Popen([str(PYDESK), "-H", d.host, "run", "--name", "pdcli-sig", BUSYBOX,
                            "sh", "-c", "trap 'echo got-int; exit 9' INT; echo ready; "
                            "while true; do sleep 0.1; done"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        assert run.stdout is not None
        assert run.stdout.readline() == b"ready\n"
        run.send_signal(2)
        out, _ = run.communicate(timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert (run.returncode, out) == (9, b"got-int\n")
