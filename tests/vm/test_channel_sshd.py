"""The SSH channel against a real OpenSSH sshd: pinned host key, key login, exec, streamlocal."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydesk.vm.channel import GuestChannel
from pydesk.vm.errors import ChannelError, HostKeyMismatch
from pydesk.vm.instance import Keys, ensure_keys, instance_files
from tests.vm.sshd import Sshd


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return ensure_keys(instance_files("chan", tmp_path / "home"))


@pytest.fixture
def sshd(tmp_path: Path, keys: Keys) -> Iterator[Sshd]:
    server = Sshd(tmp_path, keys_host_key_path(tmp_path), keys.client_public_line).start()
    try:
        yield server
    finally:
        server.stop()


def keys_host_key_path(tmp_path: Path) -> Path:
    return instance_files("chan", tmp_path / "home").host_key


@pytest.fixture
def ping_server(tmp_path: Path) -> Iterator[Path]:
    """A unix socket answering every HTTP request with 200 OK, like pydeskd's /_ping."""
    path = tmp_path / "api.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                line = request.split(b"\r\n")[0]
                body = b"OK" if line.startswith(b"GET /_ping ") else b"nope"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    stop.set()
    server.close()
    thread.join(5)


def test_exec_with_pinned_key(sshd: Sshd, keys: Keys) -> None:
    with GuestChannel.connect(sshd.port, keys.client_private, keys.host_public_line) as chan:
        result = chan.exec("echo out; echo err >&2; exit 7")
    assert (result.status, result.stdout, result.stderr) == (7, b"out\n", b"err\n")


def test_exec_returns_all_of_a_large_output(sshd: Sshd, keys: Keys, tmp_path: Path) -> None:
    # More than the channel's window: the output must be read to the guest's EOF, not only
    # until the exit status arrives (a 300 kB `cat` came back cut short in the vm tier).
    data = os.urandom(4_000_000)
    (tmp_path / "big").write_bytes(data)
    with GuestChannel.connect(sshd.port, keys.client_private, keys.host_public_line) as chan:
        for _ in range(3):
            result = chan.exec(f"cat {tmp_path / 'big'}")
            assert result.status == 0 and len(result.stdout) == len(data)
            assert result.stdout == data


def test_streamlocal_ping(sshd: Sshd, keys: Keys, ping_server: Path) -> None:
    with GuestChannel.connect(sshd.port, keys.client_private, keys.host_public_line) as chan:
        assert chan.http_get("/_ping", socket_path=str(ping_server)) == (200, b"OK")
        # several channels over one connection
        assert chan.http_get("/version", socket_path=str(ping_server)) == (200, b"nope")


def test_streamlocal_to_missing_socket_is_refused(sshd: Sshd, keys: Keys, tmp_path: Path) -> None:
    with GuestChannel.connect(sshd.port, keys.client_private, keys.host_public_line) as chan:
        with pytest.raises(ChannelError, match="refused"):
            chan.open_unix(str(tmp_path / "nothing.sock"))
        assert chan.active


def test_other_host_key_is_rejected(sshd: Sshd, keys: Keys, tmp_path: Path) -> None:
    other = ensure_keys(instance_files("other", tmp_path / "home"))
    with pytest.raises(HostKeyMismatch):
        GuestChannel.connect(sshd.port, keys.client_private, other.host_public_line)


def test_other_client_key_is_refused(sshd: Sshd, keys: Keys, tmp_path: Path) -> None:
    other = ensure_keys(instance_files("other", tmp_path / "home"))
    with pytest.raises(ChannelError, match=r"SSH to the guest failed|did not accept"):
        GuestChannel.connect(sshd.port, other.client_private, keys.host_public_line)


def test_run_command_streams_and_returns_status(sshd: Sshd, keys: Keys) -> None:
    import io

    from pydesk.vm.terminal import run_command

    out, err = io.BytesIO(), io.BytesIO()
    with GuestChannel.connect(sshd.port, keys.client_private, keys.host_public_line) as chan:
        code = run_command(chan, "printf 'a\\nb\\n'; echo e >&2; exit 4", out, err)
    assert (code, out.getvalue(), err.getvalue()) == (4, b"a\nb\n", b"e\n")


def test_interactive_shell_on_a_pty(sshd: Sshd, keys: Keys) -> None:
    """`pydesk vm ssh` with no command: a pty shell; the local tty is raw and restored."""
    import os
    import pty
    import sys
    import time

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pydesk.vm.channel import GuestChannel\n"
        "from pydesk.vm.terminal import interactive\n"
        f"chan = GuestChannel.connect({sshd.port}, Path({str(keys.client_private)!r}), "
        f"{keys.host_public_line!r})\n"
        "sys.exit(interactive(chan))\n")
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin/stdout are the pty
        os.execv(sys.executable, [sys.executable, "-c", script])
    seen = b""
    deadline = time.monotonic() + 30
    sent = False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break  # the child exited and closed the pty
        seen += chunk
        if not sent and (b"#" in seen or b"$" in seen):
            os.write(fd, b"tty; echo pty-$((6*7)); exit 5\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert b"pty-42" in seen and b"/dev/pts/" in seen, seen
    assert os.waitstatus_to_exitcode(status) == 5
