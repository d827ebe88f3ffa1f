"""Every file of a shim's state directory, named in one place (as Lima's filenames.go does).

A restarted daemon finds a running shim from the state directory alone: the control socket is
``socket_path(state_dir)``; if the shim is gone, ``exit.json`` says how the container ended.
This module must stay pure: names only, no I/O except :func:`atomic_write`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TYPE_CHECKING = False  # typing and dataclasses cost start-up time: mypy only (see serve.py)
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from pydeskd.runtime.record import NamedTuple

# AF_UNIX paths are limited to 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
SOCKET_NAME = "shim.sock"


def socket_path(state_dir: Path) -> Path:
    """The control socket of the shim that owns ``state_dir``."""
    return state_dir / SOCKET_NAME


class StatePaths(NamedTuple):
    root: Path

    @property
    def socket(self) -> Path:
        return socket_path(self.root)

    @property
    def shim_json(self) -> Path:
        """Who the shim is (pid, id, bundle, runtime): written once it serves."""
        return self.root / "shim.json"

    @property
    def init_pid(self) -> Path:
        """The runtime's --pid-file for the container's init."""
        return self.root / "init.pid"

    @property
    def exit_json(self) -> Path:
        """The init's exit status and time, written atomically once output is drained."""
        return self.root / "exit.json"

    @property
    def runtime_log(self) -> Path:
        """The runtime's --log (JSON lines): where its error messages are read from."""
        return self.root / "runtime.log"

    @property
    def shim_log(self) -> Path:
        """The shim's own stderr (tracebacks, --debug messages)."""
        return self.root / "shim.log"

    @property
    def default_log(self) -> Path:
        return self.root / "container.log"

    def console_socket(self, n: int) -> Path:
        """Console socket of process number n (0 = init); short names keep within 108 bytes."""
        return self.root / f"c{n}.sock"

    def exec_process(self, n: int, fast: bool = False) -> Path:
        """The exec's process spec: JSON for any runtime, or (``fast``) the marshal format
        pydesk-runc reads without importing json (see ``Runtime.fast_process_files``)."""
        return self.root / (f"exec{n}.marshal" if fast else f"exec{n}.json")

    def exec_pid(self, n: int) -> Path:
        return self.root / f"exec{n}.pid"


def atomic_write(path: Path, obj: dict[str, Any], durable: bool = True) -> None:
    """Writes JSON so that a reader sees the old file or the whole new one: tmp, fsync, rename.

    ``durable`` also fsyncs (file and directory), so the new content survives a crash.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(obj).encode() + b"\n")
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
