"""``pydeskd-preload``: pydeskd, imported ahead of time while PID 1 prepares the guest.

What it is for: importing pydeskd (FastAPI, pydantic, pyroute2, asyncio) is most of the guest's
boot under TCG; the guest init starts this process first thing (``spawn``, before its own
imports), so that the import runs on the second vCPU while the init mounts, configures the
network and checks the data disk. When the import is done it writes one byte on fd 3 (a pipe
to the init: the VM may be snapshotted once pydeskd is imported, see ``snapshot.py``). Once the
data disk is mounted, the init writes one line on this process's stdin, ``go`` and pydeskd's
arguments separated by NULs, and it becomes pydeskd; on EOF or anything else it exits quietly.
After a go it reseeds Python's ``random`` (the process may live in a resumed snapshot: its state
would repeat at every resume).

What it must never do: start the daemon before ``go`` (its data root is not mounted yet), or
import anything here beyond ``os``, ``sys`` and ``time`` (the init imports this module before
the rest).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

PRELOAD = "/opt/pydesk/bin/pydeskd-preload"
PYDESKD_LOG = "/var/log/pydeskd.log"
ENV = {"PATH": "/opt/pydesk/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8", "TERM": "linux", "PYTHONDONTWRITEBYTECODE": "1"}
GO = "go"
IMPORTED_FD = 3
IMPORTED = b"i"


@dataclass(frozen=True)
class Preloaded:
    """The preloader as the init sees it."""

    pid: int
    go_fd: int
    """Write end of the preloader's stdin: the go line."""
    imported_fd: int = -1
    """Read end of the preloader's fd 3: one byte once pydeskd is imported (EOF if it died)."""


def go_line(pydeskd_args: list[str]) -> bytes:
    return "\0".join([GO, *pydeskd_args]).encode() + b"\n"


def parse_go_line(data: bytes) -> list[str] | None:
    """pydeskd's arguments from the init's line, or None (not a go)."""
    if not data.endswith(b"\n"):
        return None
    fields = data[:-1].decode(errors="replace").split("\0")
    return fields[1:] if fields[0] == GO else None


def spawn() -> Preloaded | None:
    """Starts the preloader (stdin: a pipe; fd 3: a pipe back; output: pydeskd's log), or None
    when it cannot start (the init then starts pydeskd the usual way)."""
    try:
        reader, writer = os.pipe2(os.O_CLOEXEC)
        imported_r, imported_w = os.pipe2(os.O_CLOEXEC)
    except OSError:
        return None
    actions = [(os.POSIX_SPAWN_DUP2, reader, 0),
               (os.POSIX_SPAWN_DUP2, imported_w, IMPORTED_FD),
               (os.POSIX_SPAWN_OPEN, 1, PYDESKD_LOG,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOCTTY, 0o640),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    try:
        pid = os.posix_spawn(PRELOAD, [PRELOAD], ENV, file_actions=actions, setsid=True)
    except OSError:
        for fd in (writer, imported_r):
            os.close(fd)
        return None
    finally:
        os.close(reader)
        os.close(imported_w)
    return Preloaded(pid, writer, imported_r)


def _report_imported() -> None:
    try:
        os.write(IMPORTED_FD, IMPORTED)
        os.close(IMPORTED_FD)
    except OSError:
        pass  # started by hand, without the pipe


def _note(message: str) -> None:
    os.write(2, f"pydeskd-preload: {message}\n".encode())


def _import_routes() -> None:
    """The API's route modules too (FastAPI builds their routes and pydantic models at import):
    pydeskd imports them only when it serves, after the go; here they land in the snapshot."""
    import importlib

    from pydeskd.api.app import ROUTE_MODULES

    for name in ROUTE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as e:  # the daemon reports it properly when it serves
            _note(f"{name}: {e}")


def main() -> int:
    started = time.monotonic()
    import pydeskd.daemon.main as daemon_main  # the slow part, on purpose

    _import_routes()
    imported = time.monotonic()
    _note(f"pydeskd imported in {imported - started:.2f}s; waiting for the data disk")
    _report_imported()
    data = b""
    while not data.endswith(b"\n") and len(data) < 1 << 16:
        chunk = os.read(0, 4096)
        if not chunk:
            return 0
        data += chunk
    args = parse_go_line(data)
    if args is None:
        return 0
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _note(f"go after {time.monotonic() - imported:.2f}s more")
    import random  # already imported by pydeskd: free

    random.seed()  # from os.urandom, which the init reseeded after a resume
    sys.argv = ["pydeskd", *args]
    return daemon_main.run(args)


if __name__ == "__main__":
    sys.exit(main())
