"""``pydesk volume|network`` against a real pydeskd, and ``run -it``/``exec -it`` through a pty."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

from tests.integration.cli.conftest import PYDESK, env, pydesk
from tests.support.pydeskd import Pydeskd

BUSYBOX = "busybox:latest"


def test_volumes(d: Pydeskd) -> None:
    assert pydesk(d, "volume", "create", "--label", "k=v", "pdcli-vol").stdout == "pdcli-vol\n"
    ls = pydesk(d, "volume", "ls").stdout.splitlines()
    assert ls[0].split("   ")[0] == "DRIVER" and "pdcli-vol" in ls[0 + 1:][0] + "".join(ls)
    assert "pdcli-vol" in pydesk(d, "volume", "ls", "-q").stdout.split()
    info = json.loads(pydesk(d, "volume", "inspect", "pdcli-vol").stdout)
    assert info[0]["Name"] == "pdcli-vol" and info[0]["Labels"] == {"k": "v"}
    assert pydesk(d, "volume", "inspect", "-f", "{{.Driver}}", "pdcli-vol").stdout == "local\n"
    pydesk(d, "pull", "-q", BUSYBOX)
    pydesk(d, "run", "--rm", "-v", "pdcli-vol:/data", BUSYBOX, "sh", "-c", "echo kept > /data/f")
    assert pydesk(d, "run", "--rm", "-v", "pdcli-vol:/data", BUSYBOX, "cat",
                  "/data/f").stdout == "kept\n"
    assert pydesk(d, "volume", "rm", "pdcli-vol").stdout == "pdcli-vol\n"
    done = pydesk(d, "volume", "rm", "pdcli-vol", check=False)
    assert done.returncode == 1 and "Error response from daemon" in done.stderr


def test_networks(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    net_id = pydesk(d, "network", "create", "--subnet", "10.231.7.0/24",
                    "pdcli-net").stdout.strip()
    assert len(net_id) == 64
    ls = pydesk(d, "network", "ls").stdout.splitlines()
    assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert any(line.startswith(net_id[:12]) and "pdcli-net" in line for line in ls)
    subnet = pydesk(d, "network", "inspect", "-f", "{{json .IPAM.Config}}", "pdcli-net").stdout
    assert "10.231.7.0/24" in subnet
    pydesk(d, "run", "-d", "--name", "pdcli-c", BUSYBOX, "sleep", "60")
    pydesk(d, "network", "connect", "pdcli-net", "pdcli-c")
    nets = json.loads(pydesk(d, "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                             "pdcli-c").stdout)
    assert "pdcli-net" in nets
    assert nets["pdcli-net"]["IPAddress"].startswith("10.231.7.")
    pydesk(d, "network", "disconnect", "pdcli-net", "pdcli-c")
    nets = json.loads(pydesk(d, "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                             "pdcli-c").stdout)
    assert "pdcli-net" not in nets
    done = pydesk(d, "run", "--rm", "--network", "pdcli-net", BUSYBOX, "cat", "/proc/net/fib_trie")
    assert "10.231.7." in done.stdout
    assert pydesk(d, "network", "rm", "pdcli-net").stdout == "pdcli-net\n"


def _through_pty(d: Pydeskd, args: list[str], typed: bytes, timeout: float = 30) -> \
        tuple[int, bytes]:
    """Run ``pydesk ARGS`` on a pty, type ``typed`` once a prompt shows, return (code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(PYDESK), "-H", d.host, *args], stdin=slave, stdout=slave,
                            stderr=slave, env=env(), start_new_session=True)
    os.close(slave)
    output, sent = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the slave side is closed, the process is gone
                    break
                if not chunk:
                    break
                output += chunk
            if not sent and b"# " in output:
                os.write(master, typed)
                sent = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_run_it_through_a_pty(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    code, output = _through_pty(d, ["run", "-it", "--rm", BUSYBOX, "sh"],
                                b"echo $((6*7)); tty; exit 3\r")
    assert code == 3, output
    assert b"42" in output and b"/dev/pts/" in output


def test_exec_it_through_a_pty(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    pydesk(d, "run", "-d", "--name", "pdcli-x", BUSYBOX, "sleep", "60")
    code, output = _through_pty(d, ["exec", "-it", "pdcli-x", "sh"],
                                b"echo $((6*7)); exit 5\r")
    assert code == 5, output
    assert b"42" in output


def test_run_i_without_tty_pipes_stdin(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    done = pydesk(d, "run", "-i", "--rm", BUSYBOX, "sh", "-c", "tr a-z A-Z; exit 2",
                  input=b"shout\n", check=False)
    assert (done.returncode, done.stdout) == (2, "SHOUT\n")


def test_relative_bind_mount_and_inspect_of_any_object(d: Pydeskd, tmp_path: Path) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("from the host\n")
    done = subprocess.run([str(PYDESK), "-H", d.host, "run", "--rm", "-v", "./site:/www",
                           BUSYBOX, "sh", "-c", "cat /www/index.html; echo back > /www/new"],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, check=False,
                          timeout=60)
    assert (done.returncode, done.stdout) == (0, "from the host\n"), done.stderr
    assert (tmp_path / "site" / "new").read_text() == "back\n"
    pydesk(d, "volume", "create", "pdcli-iv")
    pydesk(d, "network", "create", "pdcli-in")
    assert pydesk(d, "inspect", "-f", "{{.Name}}", "pdcli-iv", "pdcli-in").stdout == \
        "pdcli-iv\npdcli-in\n"
    done = pydesk(d, "inspect", "pdcli-nothing", check=False)
    assert done.returncode == 1 and "No such object: pdcli-nothing" in done.stderr
