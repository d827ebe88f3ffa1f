"""The console socket: the pty master arrives over SCM_RIGHTS, sized, for create and exec -t."""

from __future__ import annotations

import os
import select
import socket
import time
from pathlib import Path

from tests.support.busybox import write_config
from tests.support.conformance import Box
from tests.support.runtimes import run_captured


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, data
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the slave side closed
                break
            if not chunk:
                break
            data += chunk
    return data


def receive_master(server: socket.socket) -> int:
    server.settimeout(10)
    conn, _ = server.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    assert len(fds) == 1
    return fds[0]


def listen(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    return server


def test_terminal_container_gets_a_sized_pty(box: Box) -> None:
    bundle = box.sh("tty; stty size; echo done")
    bundle.config["process"]["terminal"] = True
    bundle.config["process"]["consoleSize"] = {"height": 33, "width": 101}
    write_config(bundle.path, bundle.config)
    rt = box.runtime
    sock_path = box.workdir / "console.sock"
    with listen(sock_path) as server:
        rt.ids.add(bundle.id)
        rt("create", "--console-socket", str(sock_path), "-b", str(bundle.path),
           bundle.id).check()
        master = receive_master(server)
    try:
        rt("start", bundle.id).check()
        output = read_until(master, b"done")
    finally:
        os.close(master)
    lines = output.decode().replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert "33 101" in lines
    rt.wait_status(bundle.id, "stopped")
    rt("delete", bundle.id).check()


def test_exec_tty(box: Box) -> None:
    bundle = box.bundle(["sleep", "300"])
    rt = box.runtime
    rt.create(bundle.id, bundle.path).check()
    rt("start", bundle.id).check()
    sock_path = box.workdir / "exec.sock"
    with listen(sock_path) as server:
        pid_file = box.workdir / "exec.pid"
        rt("exec", "-t", "-d", "--console-socket", str(sock_path), "--pid-file", str(pid_file),
           bundle.id, "sh", "-c", "tty; echo ready").check()
        master = receive_master(server)
    try:
        output = read_until(master, b"ready")
    finally:
        os.close(master)
    assert output.decode().replace("\r", "").splitlines()[0].startswith("/dev/pts/")
    rt("delete", "--force", bundle.id).check()


def test_terminal_without_console_socket_is_refused(box: Box) -> None:
    bundle = box.sh("true")
    bundle.config["process"]["terminal"] = True
    write_config(bundle.path, bundle.config)
    result = box.runtime.create(bundle.id, bundle.path)
    assert result.returncode == 1 and "--console-socket" in result.stderr
    assert not (box.runtime.root / bundle.id).exists()


def test_foreground_run_of_a_terminal_container_relays_the_pty(box: Box) -> None:
    # No --console-socket: `run` receives the pty itself and relays our stdin and stdout.
    bundle = box.bundle(["sh"])
    bundle.config["process"]["terminal"] = True
    write_config(bundle.path, bundle.config)
    rt = box.runtime
    rt.ids.add(bundle.id)
    script = box.workdir / "input"
    script.write_text("tty; echo sum-$((40+2)); exit 3\n")
    with script.open("rb") as stdin:
        result = run_captured(rt.argv("run", "-b", str(bundle.path), bundle.id),
                              stdin=stdin.fileno())
    assert result.returncode == 3, result.describe()
    lines = result.stdout.replace("\r", "").splitlines()
    assert "sum-42" in lines and any(line.startswith("/dev/pts/") for line in lines)
    assert not (rt.root / bundle.id).exists()
    assert not list(rt.root.glob("console-*.sock"))
