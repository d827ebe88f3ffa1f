"""A container's on-disk state under ``--root`` and the status derived from it.

``<root>/<id>/state`` is written by ``create`` (atomically): first *provisional* (the cgroup
and the pids known so far, so that ``delete`` can clean up after a ``create`` killed half-way),
then final once the init is ready, never updated after that. The status is *derived* each time,
as runc does: provisional -> creating while the creating runtime lives, else stopped; init alive
and the exec fifo present -> created; alive and no fifo -> running; its cgroup frozen -> paused;
gone, a zombie, or its pid reused by another process (the start time differs) -> stopped.

Imports ``os`` and ``marshal`` only: ``start``, ``kill`` and ``delete`` load nothing else, so they
cost little more than the interpreter's start-up. The file is therefore the ``marshal`` encoding
of a dict of plain values (only this runtime reads it; ``pydesk-runc state`` prints JSON):
``import json`` alone costs ~8 ms per call here (it pulls in ``re``, ``enum``, ``functools``),
about half of a ``start``. Must never write anything but the container's own state directory.
"""

from __future__ import annotations

import marshal
import os

from pydeskd.runtime.errors import ContainerNotFound, RuntimeFailure

# typing costs start-up time on every call; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/pydesk/runc"
STATE_FILE = "state"
EXEC_FIFO = "exec.fifo"
OCI_VERSION = "1.0.2"

CREATING = "creating"
CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"

# runc's rule for ids (Go's ASCII \w, '+', '-' and '.', never "." or ".."), without `re`.
_ID_PUNCTUATION = frozenset("_+-.")


def check_id(container_id: str) -> str:
    """Returns the id; raises RuntimeFailure if it could escape the state directory."""
    if (not container_id or container_id in (".", "..")
            or not all(c.isascii() and (c.isalnum() or c in _ID_PUNCTUATION)
                       for c in container_id)):
        raise RuntimeFailure(f"invalid container id format: {container_id!r}")
    return container_id


def container_dir(root: str, container_id: str) -> str:
    return os.path.join(root, check_id(container_id))


def load(root: str, container_id: str) -> dict[str, Any]:
    """The saved state; raises ContainerNotFound if there is none."""
    path = os.path.join(container_dir(root, container_id), STATE_FILE)
    try:
        with open(path, "rb") as f:
            data = marshal.loads(f.read())
    except FileNotFoundError:
        raise ContainerNotFound(f"container does not exist: {container_id}") from None
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise RuntimeFailure(f"container {container_id}: unreadable state: {exc}") from None
    if not isinstance(data, dict):
        raise RuntimeFailure(f"container {container_id}: unreadable state: not a record")
    data["_dir"] = os.path.dirname(path)
    return data


def write_atomic(path: str, data: bytes, mode: int = 0o644, sync: bool = True) -> None:
    """Writes data to path via a temporary file, fsync and rename: all or nothing."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


def save(state_dir: str, data: dict[str, Any], sync: bool = True) -> None:
    clean = {k: v for k, v in data.items() if not k.startswith("_")}
    write_atomic(os.path.join(state_dir, STATE_FILE), marshal.dumps(clean), 0o600, sync)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of pid, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name is parenthesised and may contain spaces or ')': split after the last.
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def init_alive(data: dict[str, Any]) -> bool:
    """True if the container's init still runs (not a zombie, and not a reused pid)."""
    pid = int(data.get("pid", 0))
    if pid <= 0:
        return False
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == data.get("start_time")


def same_process(pid: int, start_time: object) -> bool:
    """True if pid runs (not a zombie) and is the process that started at start_time."""
    stat = proc_stat(pid) if pid > 0 else None
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == start_time


def is_provisional(data: dict[str, Any]) -> bool:
    return bool(data.get("provisional"))


def status(data: dict[str, Any]) -> str:
    if is_provisional(data):
        runtime = data.get("runtime") or [0, None]
        return CREATING if same_process(int(runtime[0]), runtime[1]) else STOPPED
    if not init_alive(data):
        return STOPPED
    if os.path.exists(os.path.join(data["_dir"], EXEC_FIFO)):
        return CREATED
    if _frozen(int(data["pid"])):
        return PAUSED
    return RUNNING


def _frozen(pid: int) -> bool:
    # Read through /proc/PID/cgroup so that this needs neither the cgroups package nor ctypes.
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "freezer" in controllers.split(","):
            return _read(f"/sys/fs/cgroup/freezer{path}/freezer.state") == "FROZEN"
        if controllers == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            return _read(f"/sys/fs/cgroup{path}/cgroup.freeze") == "1"
    return False


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def oci_state(data: dict[str, Any], current: str) -> dict[str, Any]:
    """The runtime-spec state document (as ``runc state`` prints it; pid 0 once stopped)."""
    out: dict[str, Any] = {
        "ociVersion": data.get("ociVersion", OCI_VERSION),
        "id": data["id"],
        "pid": 0 if current == STOPPED else data["pid"],
        "status": current,
        "bundle": data["bundle"],
        "rootfs": data["rootfs"],
        "created": data["created"],
        "owner": "",
    }
    if data.get("annotations"):
        out["annotations"] = data["annotations"]
    return out


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(root, n, STATE_FILE)))
