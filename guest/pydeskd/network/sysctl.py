"""The one seam for kernel parameters the network layer sets (/proc/sys).

What it is for: ``ip_forward`` on (containers reach out through the host) and
``route_localnet`` on each bridge (so ``curl 127.0.0.1:PORT`` can be DNATed to a container:
the kernel otherwise refuses to route a 127.0.0.0/8 source off the loopback device).

What it must never do: turn anything off that it did not turn on (the host's settings stay).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Sysctls(Protocol):
    def write(self, key: str, value: str) -> None: ...

    def read(self, key: str) -> str: ...


class ProcSysctls:
    def __init__(self, root: Path = Path("/proc/sys")) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key.replace(".", "/")

    def write(self, key: str, value: str) -> None:
        path = self._path(key)
        if path.read_text().strip() != value:
            path.write_text(value + "\n")

    def read(self, key: str) -> str:
        return self._path(key).read_text().strip()


def route_localnet_key(bridge: str) -> str:
    # Keys are dotted paths: pydesk's bridge names never contain a dot.
    return f"net.ipv4.conf.{bridge}.route_localnet"
