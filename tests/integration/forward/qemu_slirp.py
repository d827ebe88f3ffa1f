"""A QEMU with nothing but a user-mode network and QMP: no kernel, no device, paused (``-S``).

What it is for: the forwarder's QEMU backend runs against the real slirp stack and the real
human monitor commands without booting a guest (a few tens of milliseconds to start). One
``hostfwd`` rule is there from the start, as the agent's SSH forward is in a real instance.
What it must never do: outlive the test (killed and waited for on exit).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from pydesk.vm.qemu import USER_NETDEV_ID

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlirpQemu:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pd-fwd-", dir="/tmp"))
        self.qmp_socket = self.dir / "qmp.sock"
        self.ssh_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [QEMU, "-machine", "none", "-nodefaults", "-S", "-display", "none",
                "-netdev", f"user,id={USER_NETDEV_ID},"
                           f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-10.0.2.15:22",
                "-qmp", f"unix:{self.qmp_socket},server=on,wait=off"]

    def __enter__(self) -> SlirpQemu:
        with (self.dir / "qemu.log").open("wb") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.qmp_socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"QEMU did not start: {(self.dir / 'qemu.log').read_text()}")
            time.sleep(0.02)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
