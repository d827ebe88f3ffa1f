"""A real OpenSSH sshd on 127.0.0.1 for channel tests (Debian's openssh-server), as root.

What it is for: the channel's pinning, key login, exec and direct-streamlocal forwarding are
tested against the server the guest runs, not a paramiko fake. The server gets a host key and
an authorized key made like an instance's (``pydesk.vm.instance``), its own config, no PAM.
What it must never do: listen on anything but 127.0.0.1, read the machine's sshd config or keys,
or outlive the test (``stop`` kills and reaps it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sshd:
    def __init__(self, workdir: Path, host_key: Path, authorized_key_line: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        authorized = workdir / "authorized_keys"
        authorized.write_text(authorized_key_line + "\n")
        authorized.chmod(0o600)
        self.config = workdir / "sshd_config"
        self.log = workdir / "sshd.log"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nAllowStreamLocalForwarding yes\nAllowTcpForwarding local\n"
            "PidFile none\nLogLevel VERBOSE\n")

    def start(self) -> Sshd:
        if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
            raise RuntimeError(f"{SSHD} missing: apt-get install openssh-server")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        with self.log.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("sshd did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
