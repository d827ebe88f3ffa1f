"""Command lines of the OCI runtime, by runc's CLI contract, as pure functions.

pydesk-runc, runc and crun all take these arguments. Errors are read back from the runtime's
``--log`` file in JSON format (``{"level": "error", "msg": ...}``), as containerd does, since the
runtime's stderr is the container's stderr during ``create`` and ``exec``.
This module must never run anything itself (the shim's :mod:`children` does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing and dataclasses cost start-up time: mypy only (see serve.py)
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from pydeskd.runtime.record import NamedTuple

DEFAULT_ROOT = Path("/run/pydesk/runc")


def default_runtime() -> Path:
    """pydesk-runc next to the running interpreter (the virtualenv's console script)."""
    return Path(sys.executable).parent / "pydesk-runc"


class Runtime(NamedTuple):
    path: Path
    root: Path
    log: Path

    @property
    def fast_process_files(self) -> bool:
        """pydesk-runc reads a ``--process`` file named ``*.marshal`` with ``marshal``: its
        exec then skips importing json (and re, enum), ~9 ms of every ``docker exec``. Other
        runtimes get the runtime-spec JSON."""
        return self.path.name == "pydesk-runc"

    def _base(self) -> list[str]:
        return [str(self.path), "--root", str(self.root), "--log", str(self.log),
                "--log-format", "json"]

    def create(self, cid: str, bundle: Path, pid_file: Path,
               console_socket: Path | None = None) -> list[str]:
        argv = [*self._base(), "create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if console_socket is not None:
            argv += ["--console-socket", str(console_socket)]
        return [*argv, cid]

    def start(self, cid: str) -> list[str]:
        return [*self._base(), "start", cid]

    def kill(self, cid: str, signal: int, all_processes: bool = False) -> list[str]:
        return [*self._base(), "kill", *(["--all"] if all_processes else []), cid, str(signal)]

    def delete(self, cid: str, force: bool = False) -> list[str]:
        return [*self._base(), "delete", *(["--force"] if force else []), cid]

    def exec(self, cid: str, process_file: Path, pid_file: Path,
             console_socket: Path | None = None) -> list[str]:
        # --detach: the exec'd process is reparented to the shim (a subreaper) that reaps it,
        # as containerd's shim does; runc also requires it with --console-socket.
        argv = [*self._base(), "exec", "--detach", "--process", str(process_file),
                "--pid-file", str(pid_file)]
        if console_socket is not None:
            argv += ["--tty", "--console-socket", str(console_socket)]
        return [*argv, cid]


def error_message(log_text: str, output: bytes = b"") -> str:
    """The runtime's error: the error-level messages of its JSON log, else its own output."""
    msgs = []
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
            msgs.append(str(entry.get("msg", "")).strip())
    if msgs:
        return "; ".join(m for m in msgs if m)
    text = output.decode("utf-8", "replace").strip()
    return text or "the runtime failed and said nothing"
