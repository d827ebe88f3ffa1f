"""Read-side operations: ``docker ps`` rows and their Status texts, sizes, ``top``, ``stats``,
``container prune`` and the counts ``docker info`` shows.

Status texts and durations are Docker's (moby's State.String and go-units' HumanDuration),
because scripts and tests parse them. ``top`` runs ``ps`` once and keeps the rows of the
container's processes (its cgroup's pids), as dockerd does.

What it must never do: change a container, except ``prune`` (through the service's remove).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydeskd.containerd.errors import ContainerdError, InvalidArgument, NotFound
from pydeskd.daemon.containers import cgroupfs
from pydeskd.daemon.containers.errors import Conflict
from pydeskd.daemon.containers.filters import ListOptions, select
from pydeskd.daemon.containers.record import Container
from pydeskd.daemon.containers.state import ZERO_TIME, Status
from pydeskd.daemon.containers.timeutil import created_unix, parse_api_time, parse_rfc3339_ns

if TYPE_CHECKING:
    from pydeskd.daemon.containers.service import ContainerService


def human_duration(seconds: float) -> str:
    """go-units HumanDuration."""
    if seconds < 1:
        return "Less than a second"
    if int(seconds) == 1:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _since(stamp: str, now: float) -> str:
    try:
        return human_duration(max(0.0, now - parse_rfc3339_ns(stamp) / 1e9))
    except ValueError:
        return ""


def status_text(c: Container, now: float | None = None) -> str:
    """moby's State.String(): ``Up 3 seconds``, ``Exited (0) 2 minutes ago``, ``Created``..."""
    t = time.time() if now is None else now
    s = c.state
    if s.running:
        if s.paused:
            return f"Up {_since(s.started_at, t)} (Paused)"
        if s.restarting:
            return f"Restarting ({s.exit_code}) {_since(s.finished_at, t)} ago"
        health = (s.health or {}).get("Status")
        suffix = f" ({health})" if health and health != "none" else ""
        return f"Up {_since(s.started_at, t)}{suffix}"
    if s.status is Status.REMOVING:
        return "Removal In Progress"
    if s.dead:
        return "Dead"
    if s.started_at == ZERO_TIME:
        return "Created"
    if s.finished_at == ZERO_TIME:
        return ""
    return f"Exited ({s.exit_code}) {_since(s.finished_at, t)} ago"


def sizes(svc: ContainerService, c: Container) -> tuple[int, int]:
    """(SizeRw, SizeRootFs): the container's own layer, and that plus its image's."""
    snap = svc.images.stores.snapshotter
    try:
        rw = snap.usage(c.snapshot_key).size
        total = rw
        parent = snap.stat(c.snapshot_key).parent
        while parent:
            total += snap.usage(parent).size
            parent = snap.stat(parent).parent
    except (NotFound, OSError):
        return 0, 0
    return rw, total


def list_containers(svc: ContainerService, options: ListOptions,
                    size: bool = False) -> list[dict[str, Any]]:
    """``GET /containers/json``. Raises InvalidArgument (bad filter), NotFound (before/since)."""

    def ancestors(ref: str) -> set[str]:
        with contextlib.suppress(NotFound, InvalidArgument):
            return {svc.images.resolve(ref).id}
        return set()

    chosen = select(svc.store.all(), options, svc.store.get, ancestors)
    now = time.time()
    out = []
    for c in chosen:
        rw, root = sizes(svc, c) if size else (None, None)
        out.append(c.to_summary(created_unix(c.created), status_text(c, now), rw, root))
    return out


def counts(svc: ContainerService) -> Any:
    from pydeskd.daemon.daemon import ContainerCounts

    running = paused = stopped = 0
    all_ = svc.store.all()
    for c in all_:
        if c.state.paused:
            paused += 1
        elif c.state.running:
            running += 1
        else:
            stopped += 1
    return ContainerCounts(total=len(all_), running=running, paused=paused, stopped=stopped)


def top(svc: ContainerService, ref: str, ps_args: str = "") -> dict[str, Any]:
    """``docker top``: ``ps`` (default ``-ef``) rows of the container's processes."""
    c = svc.get(ref)
    if not c.state.is_running:
        raise Conflict(f"container {c.id} is not running")
    pids = set(cgroupfs.pids(svc.cgroups_path(c)))
    args = (ps_args or "-ef").split()
    done = subprocess.run(["ps", *args], capture_output=True, text=True, timeout=30,
                          check=False)
    if done.returncode != 0:
        raise InvalidArgument(f"ps: {done.stderr.strip() or done.stdout.strip()}")
    lines = done.stdout.splitlines()
    if not lines:
        raise InvalidArgument("ps: no output")
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidArgument("Couldn't find PID field in ps output")
    pid_at = titles.index("PID")
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > pid_at and fields[pid_at].isdigit() and int(fields[pid_at]) in pids:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}


def stats(svc: ContainerService, ref: str,
          previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """One stats sample (Docker's JSON) from the container's cgroup; zeros when stopped."""
    c = svc.get(ref)
    return cgroupfs.stats(c.id, c.name, svc.cgroups_path(c), previous=previous)


def prune(svc: ContainerService,
          filters: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """``docker container prune``: every stopped container matching ``until``/``label``
    (``label!``). ``{"ContainersDeleted": [...], "SpaceReclaimed": n}``."""
    filters = {k: list(v) for k, v in (filters or {}).items()}
    for key in filters:
        if key not in ("until", "label", "label!"):
            raise InvalidArgument(f"invalid filter '{key}'")
    until = [parse_api_time(v) for v in filters.get("until", [])]
    deleted: list[str] = []
    reclaimed = 0
    for c in svc.store.all():
        if c.state.running or c.state.removal_in_progress:
            continue
        if until and not all(parse_rfc3339_ns(c.created) < u for u in until):
            continue
        labels = c.labels
        if not all(_label(labels, v) for v in filters.get("label", [])):
            continue
        if any(_label(labels, v) for v in filters.get("label!", [])):
            continue
        rw, _ = sizes(svc, c)
        try:
            svc.remove(c.id)
        except ContainerdError:
            continue
        deleted.append(c.id)
        reclaimed += rw
    return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def _label(labels: Mapping[str, str], wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)

