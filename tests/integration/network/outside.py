"""An "outside" host for the network tests: a network namespace behind the host, joined to it
by a veth pair on a subnet of its own, running a small HTTP server.

A container that reaches ``server_url`` went out through the host with its source address
masqueraded (the namespace has no route back to container subnets); ``host_ip`` is the host's
address on that link, which the namespace uses to reach published ports "from another
machine". Everything is removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Outside:
    def __init__(self, subnet24: str, port: int) -> None:
        base = subnet24.rsplit(".", 1)[0]
        tag = os.urandom(3).hex()
        self.netns = f"pdt-out-{tag}"
        self.host_link = f"pdto{tag}"
        self.host_ip = f"{base}.1"
        self.server_ip = f"{base}.2"
        self.port = port
        self.server: subprocess.Popen[bytes] | None = None
        self.www = Path(tempfile.mkdtemp(prefix="pdt-www-"))

    @property
    def server_url(self) -> str:
        return f"http://{self.server_ip}:{self.port}/index.html"

    def __enter__(self) -> Outside:
        try:
            _ip("netns", "add", self.netns)
            _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "eth0",
                "netns", self.netns)
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
            _ip("-n", self.netns, "addr", "add", f"{self.server_ip}/24", "dev", "eth0")
            _ip("-n", self.netns, "link", "set", "eth0", "up")
            _ip("-n", self.netns, "link", "set", "lo", "up")
            (self.www / "index.html").write_text("outside says hi\n")
            self.server = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-m", "http.server",
                 str(self.port), "--bind", self.server_ip, "--directory", str(self.www)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._wait_listening()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done = subprocess.run(["ip", "netns", "exec", self.netns, "curl", "-s",
                                   "--max-time", "1", self.server_url], capture_output=True,
                                  check=False)
            if done.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("the outside HTTP server did not start")

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.host_link)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.netns)
        for path in self.www.iterdir():
            path.unlink()
        self.www.rmdir()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
