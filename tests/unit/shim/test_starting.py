"""How a shim is started (pydeskd.shim.starting): detached from the caller, nothing inherited,
nothing left to reap, refusals before any spawn, a shim that never reports. No root needed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pydeskd.shim import starting
from pydeskd.shim.client import ShimClient, ShimStartError, start_shim
from pydeskd.shim.protocol import Status
from pydeskd.shim.starting import ShimUsageError
from tests.unit.shim.conftest import Env


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children() -> set[int]:
    """This process's children, live or zombie (other fixtures may have some of their own,
    e.g. a session's registry: compare before and after rather than expect none)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _ppid(int(entry.name)) == os.getpid():
                    out.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _fd_targets(pid: int) -> set[str]:
    fds = Path(f"/proc/{pid}/fd")
    return {os.readlink(fd) for fd in fds.iterdir()}


def test_the_shim_is_not_the_callers_child_and_nothing_is_left_to_reap(env: Env) -> None:
    before = _children()
    client = env.start(["sleep", "60"])
    shim_pid = json.loads((client.path.parent / "shim.json").read_text())["pid"]
    assert _ppid(shim_pid) != os.getpid()
    # Its own session, so no signal of ours reaches it. getsid(2), not /proc: it answers in our
    # pid namespace, and CI may run us in one whose /proc is another's (where our own session
    # leader is outside it, getsid(0) is 0; the shim's session was made inside it, never 0).
    assert os.getsid(shim_pid) not in (0, os.getsid(0))
    # No new child of ours: neither live nor exited and left unreaped.
    assert _children() <= before
    assert client.state().status is Status.CREATED


def test_the_shim_inherits_no_fd_of_the_caller(env: Env) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    os.set_inheritable(listener.fileno(), True)  # even one marked inheritable is not passed
    try:
        inode = os.fstat(listener.fileno()).st_ino
        client = env.start(["sleep", "60"])
        shim_pid = json.loads((client.path.parent / "shim.json").read_text())["pid"]
        targets = _fd_targets(shim_pid)
        assert f"socket:[{inode}]" not in targets
        assert os.readlink(f"/proc/{shim_pid}/fd/1") == os.devnull
        assert os.readlink(f"/proc/{shim_pid}/fd/2") == str(client.path.parent / "shim.log")
    finally:
        listener.close()


def test_the_runtime_gets_default_signal_dispositions_and_only_its_stdio(env: Env) -> None:
    """The shim spawns ``runtime create`` itself (os.posix_spawn): the runtime (and so the
    container) must not inherit Python's ignored SIGPIPE, nor the shim's report pipe."""
    probe = env.base / "probe-runtime"
    lister = env.base / "listfds.py"
    lister.write_text(
        "import os, sys\nlines = []\nfor fd in os.listdir('/proc/self/fd'):\n"
        "    try:\n        lines.append(fd + ' ' + os.readlink('/proc/self/fd/' + fd))\n"
        "    except OSError:\n        pass  # the listing's own fd, closed\n"
        "open(sys.argv[1], 'w').write('\\n'.join(lines))\n")
    # Records on create only (the shim's cleanup runs it again, for delete).
    probe.write_text("#!/bin/sh\ncase \" $* \" in *\" create \"*) ;; *) exit 0;; esac\n"
                     f"grep SigIgn /proc/$$/status > {env.base}/sigign\n"
                     f'exec "{sys.executable}" {lister} {env.base}/fds\n')
    probe.chmod(0o755)
    bundle = env.base / "b-probe"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["true"]}}))
    with pytest.raises(ShimStartError, match="no usable pid file"):
        start_shim("probe", bundle, env.base / "s-probe", runtime=probe,
                   runtime_root=env.base / "root")
    ignored = int((env.base / "sigign").read_text().split()[1], 16)
    assert not ignored & (1 << (13 - 1))  # SIGPIPE
    # What the runtime inherited: its stdio (pipes) and nothing else.
    fds = dict(line.split(" ", 1) for line in (env.base / "fds").read_text().splitlines())
    assert {"0", "1", "2"} <= set(fds)
    assert [n for n, target in fds.items() if n not in "012" and "pipe:" in target] == []


def test_a_runtime_that_cannot_be_run_is_reported_and_nothing_is_left(env: Env) -> None:
    bundle = env.base / "b-nort"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["true"]}}))
    with pytest.raises(ShimStartError, match="No such file or directory"):
        start_shim("nort", bundle, env.base / "s-nort", runtime=env.base / "missing",
                   runtime_root=env.base / "root")
    assert not (env.base / "s-nort").exists()
    with pytest.raises(ShimStartError, match=r"cannot read .*config\.json"):
        (bundle / "config.json").write_text("{")
        start_shim("nort", bundle, env.base / "s-nort", runtime=env.runtime)
    assert not (env.base / "s-nort").exists()


def test_refusals_come_before_any_spawn(env: Env) -> None:
    with pytest.raises(ShimUsageError, match=r"no config\.json"):
        start_shim("x", env.base / "missing", env.base / "s-x")
    assert not (env.base / "s-x").exists()
    bundle = env.base / "b-x"
    bundle.mkdir()
    (bundle / "config.json").write_text("{}")
    with pytest.raises(ShimUsageError, match="log-max-files"):
        start_shim("x", bundle, env.base / "s-x", log_max_files=0)
    with pytest.raises(ShimUsageError, match="too long"):
        start_shim("x", bundle, env.base / ("d" * 120))
    first = env.start(["sleep", "60"])
    with pytest.raises(ShimUsageError, match="already serves"):
        start_shim("x", bundle, first.path.parent)
    assert first.state().status is Status.CREATED
    assert not (env.base / "s-x").exists()


def test_a_shim_that_does_not_report_in_time_is_an_error(env: Env) -> None:
    stuck = env.base / "stuck-runtime"
    # The test's path on its command line: the env's cleanup finds it and kills it.
    stuck.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import time; time.sleep(60)" "$0"\n')
    stuck.chmod(0o755)
    bundle = env.base / "b-stuck"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["true"]}}))
    before = _children()
    with pytest.raises(ShimStartError, match=r"did not report within 0\.5 s"):
        start_shim("stuck", bundle, env.base / "s-stuck", runtime=stuck,
                   runtime_root=env.base / "root", timeout=0.5)
    assert _children() <= before


def test_a_shim_that_dies_before_it_reports_is_an_error(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = env.base / "b-dead"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["true"]}}))
    # Stands in for a shim that crashes at once: it exits without a word on the pipe.
    monkeypatch.setattr(starting, "serve_command",
                        lambda: [sys.executable, "-c", "import sys; sys.exit(3)"])
    before = _children()
    with pytest.raises(ShimStartError, match=r"died before it was ready.*shim\.log"):
        start_shim("dead", bundle, env.base / "s-dead", runtime=env.runtime)
    assert _children() <= before


def test_the_cli_start_prints_the_socket_and_refuses_bad_arguments(env: Env) -> None:
    bundle = env.base / "b-cli"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["sleep", "60"]}}))
    state = env.base / "s-cli"
    cmd = [sys.executable, "-m", "pydeskd.shim.main", "start", "--id", "cli", "--bundle",
           str(bundle), "--runtime", str(env.runtime), "--runtime-root", str(env.base / "root")]
    bad = subprocess.run([*cmd, "--state-dir", str(state), "--log-max-files", "0"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2 and "log-max-files" in bad.stderr
    done = subprocess.run([*cmd, "--state-dir", str(state)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(state / "shim.sock")
    client = ShimClient(state / "shim.sock")
    env.clients.append(client)
    assert client.state().status is Status.CREATED


def test_a_caller_with_fds_past_1024_still_hears_the_report(env: Env) -> None:
    """A busy daemon holds many fds: the report pipe may be numbered past select()'s limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    null = os.open(os.devnull, os.O_RDONLY)
    fillers = []
    try:
        while (fd := os.dup(null)) < 1100:
            fillers.append(fd)
        fillers.append(fd)
        client = env.start(["sleep", "60"])
        assert client.state().status is Status.CREATED
    finally:
        for fd in fillers:
            os.close(fd)
        os.close(null)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
