"""The proxy with its production upstream: paramiko channels (``GuestChannel.open_unix``) through
a real OpenSSH sshd on 127.0.0.1 to a native pydeskd -- the VM's path without the VM. The half-
close must cross SSH (channel EOF -> sshd's shutdown of the unix socket) for ``run -i`` to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydesk.proxy import ApiProxy, Stream
from pydesk.vm.channel import GuestChannel
from pydesk.vm.instance import ensure_keys, instance_files
from tests.integration.proxy.conftest import BUSYBOX, Proxied
from tests.support.pydeskd import DOCKER, Pydeskd
from tests.support.terminal import read_until, under_pty
from tests.vm.sshd import Sshd


@pytest.fixture(scope="module")
def ssh_proxied(daemon: Pydeskd) -> Iterator[Proxied]:
    work = Path(tempfile.mkdtemp(prefix="pd-pxs-", dir="/tmp"))
    files = instance_files("proxy", work / "home")
    keys = ensure_keys(files)
    sshd = Sshd(work, files.host_key, keys.client_public_line).start()
    channel = GuestChannel.connect(sshd.port, keys.client_private, keys.host_public_line)

    def opener() -> Stream:
        stream: Stream = channel.open_unix(str(daemon.socket))
        return stream

    proxy = ApiProxy(work / "run" / "docker.sock", opener).start()
    try:
        yield Proxied(daemon, proxy.socket_path)
    finally:
        proxy.close()
        channel.close()
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def s(ssh_proxied: Proxied, daemon: Pydeskd) -> Iterator[Proxied]:
    yield ssh_proxied
    ssh_proxied.close_clients()
    daemon.remove_containers()


def test_run_stdin_pipe_ends_over_ssh(s: Proxied) -> None:
    data = b"".join(b"row %d\n" % i for i in range(5000))
    done = s.docker("run", "-i", "--rm", BUSYBOX, "sh", "-c", "tr a-z A-Z; exit 2",
                    input=data, check=False, timeout=60)
    assert (done.returncode, done.stdout) == (2, data.upper()), done.stderr


def test_run_tty_exec_logs_over_ssh(s: Proxied) -> None:
    with under_pty([DOCKER, "run", "-it", "--rm", BUSYBOX, "sh"], s.env()) as (proc, primary):
        assert b"#" in read_until(primary, b"# ")
        os.write(primary, b"echo $((6*7))\r")
        assert b"42" in read_until(primary, b"42\r\n")
        os.write(primary, b"exit 3\r")
        assert proc.wait(timeout=20) == 3
    s.out("run", "-d", "--name", "sx", BUSYBOX, "sh", "-c", "echo up; sleep 60")
    assert s.out("exec", "sx", "sh", "-c", "echo in-exec") == "in-exec"
    logs = s.popen("logs", "-f", "sx", stdout=subprocess.PIPE)
    assert logs.stdout is not None
    assert logs.stdout.readline() == b"up\n"
    s.out("kill", "sx")
    assert logs.wait(timeout=20) == 0


def test_docker_py_and_cp_over_ssh(s: Proxied, tmp_path: Path) -> None:
    client = s.client()
    assert client.ping() is True
    assert client.containers.run(BUSYBOX, ["echo", "py"], remove=True) == b"py\n"
    c = client.containers.run(BUSYBOX, ["sleep", "60"], detach=True, name="scp")
    payload = os.urandom(2 * 1024 * 1024)
    (tmp_path / "blob").write_bytes(payload)
    s.out("cp", str(tmp_path / "blob"), "scp:/tmp/blob")
    s.out("cp", "scp:/tmp/blob", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == payload
    assert c.exec_run(["cat", "/tmp/blob"]).output == payload
