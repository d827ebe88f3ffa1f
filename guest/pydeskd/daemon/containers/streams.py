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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.containers.attach import Attachment
from pydeskd.daemon.containers.errors import Conflict
from pydeskd.daemon.logs import LogEntry, LogOptions, read_logs

if TYPE_CHECKING:
    from pydeskd.daemon.containers.service import ContainerService


@dataclass
class Reservation:
    """An attacher the next start waits for (``generation`` None: attach to the current run)."""

    cid: str
    generation: int | None
    released: bool = False


def reserve(svc: ContainerService, ref: str) -> Reservation:
    """Counts an attacher in before its client is answered: the client may start the container
    as soon as it has the answer, and that start must wait for this attacher. Raises Conflict
    (paused, being removed)."""
    c = svc.get(ref)
    with svc.condition(c.id):
        live = svc.live(c)
        if c.state.removal_in_progress:
            raise Conflict(f"container {c.id} is marked for removal")
        if c.state.is_running and live.shim is not None:
            return Reservation(c.id, None)
        # Docker lets a client attach to a stopped container and waits for the start
        # (docker run and docker start -a attach first).
        live.attach_pending += 1
        return Reservation(c.id, live.generation)


def release(svc: ContainerService, reservation: Reservation) -> None:
    if reservation.generation is None or reservation.released:
        return
    reservation.released = True
    c = svc.store.find(reservation.cid)
    if c is None:
        return
    cond = svc.condition(c.id)
    with cond:
        svc.live(c).attach_pending -= 1
        cond.notify_all()


def attach(svc: ContainerService, ref: str, *, stdin: bool = False, stdout: bool = True,
           stderr: bool = True, timeout: float | None = None,
           reservation: Reservation | None = None) -> Attachment:
    """The live streams of a container (``docker attach``, ``docker run`` without -d).
    On a container that is not running it waits for the next start, which itself waits
    (briefly) for reserved attachers, so no output is lost. Raises Conflict, TimeoutError."""
    r = reservation or reserve(svc, ref)
    try:
        c = svc.get(r.cid)
        cond = svc.condition(c.id)
        with cond:
            live = svc.live(c)
            if r.generation is None:
                shim = live.shim
            else:
                generation = r.generation
                # A new generation is a start (shim set) or a failed one (no shim).
                if not cond.wait_for(lambda: live.generation != generation or live.removed,
                                     timeout):
                    raise TimeoutError(f"container {c.id} did not start")
                shim = None if live.removed else live.shim
            if shim is None:
                raise Conflict(f"container {c.id} is not running")
        stream = shim.attach(stdin=stdin and bool(c.config.get("OpenStdin")))
    finally:
        release(svc, r)
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
