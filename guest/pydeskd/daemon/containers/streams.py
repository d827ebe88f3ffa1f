"""Streams of a container for the API routes: attach (live stdio through the shim) and logs
(the json-file log, read back).

``attach`` on a container that is not running yet waits for its next start; the start waits
(briefly) for such attachers to connect before the process runs, so ``docker run`` and
``docker start -a`` see every byte. What it must never do: block a start for more than that
short grace, or hand out a stream of a removed container.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.containers.attach import Attachment
from pydeskd.daemon.containers.errors import Conflict
from pydeskd.daemon.containers.state import Status
from pydeskd.daemon.logs import LogEntry, LogOptions, read_logs

if TYPE_CHECKING:
    from pydeskd.daemon.containers.service import ContainerService


def attach(svc: ContainerService, ref: str, *, stdin: bool = False, stdout: bool = True,
           stderr: bool = True, timeout: float | None = None) -> Attachment:
    """The live streams of a container (``docker attach``, ``docker run`` without -d).
    On a created (or restarting) container it waits for the next start, which itself
    waits (briefly) for attachers, so no output is lost. Raises Conflict (stopped),
    TimeoutError."""
    c = svc.get(ref)
    cond = svc.condition(c.id)
    with cond:
        live = svc.live(c)
        if c.state.is_running and live.shim is not None:
            shim = live.shim
            pending = False
        elif c.state.status in (Status.CREATED, Status.RESTARTING, Status.EXITED) \
                and not c.state.removal_in_progress:
            # Docker lets a client attach to a stopped container and waits for the start
            # (docker start -a attaches first).
            live.attach_pending += 1
            pending = True
            generation = live.generation
            if not cond.wait_for(lambda: (live.generation != generation and
                                 live.shim is not None) or live.removed, timeout):
                live.attach_pending -= 1
                raise TimeoutError(f"container {c.id} did not start")
            if live.removed or live.shim is None:
                live.attach_pending -= 1
                raise Conflict(f"container {c.id} was removed")
            shim = live.shim
        else:
            raise Conflict("You cannot attach to a stopped container, start it first")
    try:
        stream = shim.attach(stdin=stdin and bool(c.config.get("OpenStdin")))
    finally:
        if pending:
            with cond:
                live.attach_pending -= 1
                cond.notify_all()
    return Attachment(stream, c.tty, stdin, stdout, stderr)

def logs(svc: ContainerService, ref: str, options: LogOptions,
         stop: threading.Event | None = None) -> Iterator[LogEntry]:
    """``docker logs``: entries of the json-file log; with ``follow``, until the container
    stops (or ``stop`` is set). Raises NotFound, InvalidArgument (a log driver without
    read support)."""
    c = svc.get(ref)
    driver = (c.host_config.get("LogConfig") or {}).get("Type") or "json-file"
    if driver not in ("json-file", "local"):
        raise InvalidArgument('configured logging driver does not support reading')
    return read_logs(Path(c.log_path), options, lambda: c.state.running, stop)
