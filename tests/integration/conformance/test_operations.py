"""Conformance beyond a single run: exec into a running container, list, ps, hooks (order and
the state they receive), sysctl, and signal deaths of a process that is not a pid-namespace init."""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.conformance import Box, Bundle


def started(box: Box, script: str = "exec sleep 300") -> Bundle:
    bundle = box.sh(script)
    pid_file = bundle.path.parent / f"{bundle.id}.pid"
    box.runtime.create(bundle.id, bundle.path, pid_file).check()
    box.runtime("start", bundle.id).check()
    box.runtime.wait_status(bundle.id, "running")
    return bundle


def process_json(bundle: Bundle, args: list[str], **changes: object) -> Path:
    process = {**bundle.config["process"], "args": args, **changes}
    path = bundle.path.parent / f"{bundle.id}-process.json"
    path.write_text(json.dumps(process))
    return path


def test_exec_joins_the_container_and_passes_the_exit_code(box: Box) -> None:
    bundle = started(box)
    init_pid = box.runtime.state(bundle.id)["pid"]
    result = box.runtime("exec", bundle.id, "sh", "-c",
                         "hostname; readlink /proc/self/ns/net; cat /proc/1/cmdline | tr '\\0' ' ';"
                         " echo; exit 7")
    assert result.returncode == 7, result.describe()
    hostname, netns, init_cmdline = result.stdout.splitlines()
    assert hostname == bundle.config["hostname"]
    assert netns == os.readlink(f"/proc/{init_pid}/ns/net")
    assert init_cmdline.strip() == "sleep 300"


def test_exec_with_process_json(box: Box) -> None:
    bundle = started(box)
    spec = process_json(bundle, ["sh", "-c", "id -u; pwd; echo $GREETING"], cwd="/tmp",
                        env=["PATH=/bin", "GREETING=hello"], user={"uid": 1000, "gid": 1000})
    result = box.runtime("exec", "--process", str(spec), bundle.id)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "1000\n/tmp\nhello\n"


def test_exec_detach_writes_a_pid_file(box: Box) -> None:
    bundle = started(box)
    pid_file = bundle.path.parent / f"{bundle.id}-exec.pid"
    box.runtime("exec", "--detach", "--pid-file", str(pid_file), bundle.id,
                "sleep", "200").check()
    pid = int(pid_file.read_text())
    # runc's detached exec may return while its init is still about to execve: give it a moment.
    deadline = time.monotonic() + 5
    while (cmdline := Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]) != [
            b"sleep", b"200"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cmdline == [b"sleep", b"200"]
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(
        f"/proc/{box.runtime.state(bundle.id)['pid']}/ns/pid")


def test_exec_in_a_stopped_container_fails(box: Box) -> None:
    bundle = started(box)
    box.runtime("kill", bundle.id, "KILL").check()
    box.runtime.wait_status(bundle.id, "stopped")
    box.runtime("exec", bundle.id, "true").check_failed_clearly()


def test_list_and_ps(box: Box) -> None:
    bundle = started(box, "sleep 300 & exec sleep 301")
    listed = json.loads(box.runtime("list", "--format", "json").check().stdout)
    assert [(c["id"], c["status"]) for c in listed] == [(bundle.id, "running")]
    ps = json.loads(box.runtime("ps", "--format", "json", bundle.id).check().stdout)
    assert len(ps) == 2
    assert box.runtime.state(bundle.id)["pid"] in ps
    cmdlines = sorted(Path(f"/proc/{pid}/cmdline").read_bytes() for pid in ps)
    assert cmdlines == [b"sleep\x00300\x00", b"sleep\x00301\x00"]


def test_list_empty_root(box: Box) -> None:
    result = box.runtime("list", "--format", "json").check()
    assert json.loads(result.stdout or "null") in (None, [])


def test_sysctl(box: Box) -> None:
    bundle = box.bundle(["cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/msgmax"])
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4321"}
    assert box.run_ok(bundle) == "1\n4321\n"


HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")


def test_hooks_run_in_order_with_the_state_on_stdin(box: Box) -> None:
    log = box.host_dir("hooks") / "log"
    bundle = box.bundle(["true"])
    # startContainer runs inside the container (after pivot_root): it sees the bind mount.
    # The others see the host's filesystem (createContainer: in the container's mount
    # namespace, but before pivot_root). busybox sh exists in both views.
    record = ("read -r state; echo \"$0 $(echo \"$state\" | grep -o '\"status\": *\"[a-z]*\"' "
              "| tr -d ' \"')\" >> ")
    bundle.config["hooks"] = {}
    for name in HOOKS:
        target = "/hooklog/log" if name == "startContainer" else str(log)
        bundle.config["hooks"][name] = [{"path": "/bin/sh",
                                         "args": ["sh", "-c", record + target, name]}]
    bundle.add_bind(log.parent, "/hooklog")
    box.run_ok(bundle)
    deadline = time.monotonic() + 5
    while len(log.read_text().splitlines()) < len(HOOKS):  # poststop may trail `run`
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    names = [line.split()[0] for line in log.read_text().splitlines()]
    # startContainer runs in the init just before its execve and poststart in `start` after
    # it released the init: runc does not wait between the two, so their order is a race.
    assert names[:3] == ["prestart", "createRuntime", "createContainer"], names
    assert sorted(names[3:5]) == ["poststart", "startContainer"], names
    assert names[5:] == ["poststop"], names
    status = dict(line.split() for line in log.read_text().splitlines() if len(line.split()) == 2)
    assert status["createRuntime"] == "status:creating"
    assert status["poststop"] == "status:stopped"


def test_failing_prestart_hook_fails_create_and_leaves_nothing(box: Box) -> None:
    bundle = box.bundle(["true"])
    bundle.config["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}
    bundle.write()
    box.runtime.create(bundle.id, bundle.path).check_failed_clearly()
    assert box.runtime("state", bundle.id).returncode != 0
    assert not (box.runtime.root / bundle.id).exists()


@pytest.mark.parametrize("signal_number", [9, 15])
def test_signal_death_of_a_non_init_process_is_128_plus_n(box: Box, signal_number: int) -> None:
    # Without a pid namespace the shell is not an init, so its own kill is not ignored.
    bundle = box.sh(f"kill -{signal_number} $$; echo survived")
    bundle.config["linux"]["namespaces"] = [
        n for n in bundle.config["linux"]["namespaces"] if n["type"] != "pid"]
    result = box.run(bundle)
    assert result.returncode == 128 + signal_number, result.describe()
    assert "survived" not in result.stdout


def read_until_closed(fd: int, timeout: float = 10.0) -> bytes:
    """Reads a pty master until the other side is gone (EIO) or the timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError as exc:
            if exc.errno == errno.EIO:  # the last slave fd closed: the process is gone
                return data
            raise
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"pty still open after {timeout}s; read so far: {data!r}")


def test_terminal_over_console_socket(box: Box) -> None:
    bundle = box.sh("stty size; tty; test -t 0 && test -t 1 && test -t 2 && echo all-ttys")
    bundle.config["process"]["terminal"] = True
    bundle.config["process"]["consoleSize"] = {"height": 31, "width": 101}
    bundle.write()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(box.workdir / "console.sock"))
        server.listen(1)
        server.settimeout(10)
        box.runtime.ids.add(bundle.id)
        box.runtime("create", "--bundle", str(bundle.path), "--console-socket",
                    str(box.workdir / "console.sock"), bundle.id).check()
        conn, _ = server.accept()
        with conn:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
    assert len(fds) == 1, "no pty master received"
    master = fds[0]
    try:
        box.runtime("start", bundle.id).check()
        out = read_until_closed(master).decode().replace("\r\n", "\n")
    finally:
        os.close(master)
    assert out == "31 101\n/dev/pts/0\nall-ttys\n"


def test_create_hands_its_stdio_to_the_container(box: Box) -> None:
    # What a shim relies on: without a terminal, the init's stdio is the stdio `create` got.
    bundle = box.sh("cat; echo to-stderr >&2")
    bundle.write()
    out_path = box.workdir / "out"
    err_path = box.workdir / "err"
    read_end, write_end = os.pipe()
    try:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            box.runtime.ids.add(bundle.id)
            created = subprocess.run(box.runtime.argv("create", "--bundle", str(bundle.path),
                                                      bundle.id),
                                     stdin=read_end, stdout=out, stderr=err, timeout=30,
                                     check=False)
        os.close(read_end)
        read_end = -1
        assert created.returncode == 0, err_path.read_text()
        box.runtime("start", bundle.id).check()
        os.write(write_end, b"through the pipe\n")
        os.close(write_end)
        write_end = -1
        box.runtime.wait_status(bundle.id, "stopped")
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    assert out_path.read_text() == "through the pipe\n"
    assert err_path.read_text().splitlines()[-1:] == ["to-stderr"]
