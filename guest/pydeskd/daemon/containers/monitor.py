"""The monitor of a container run: waits for its exit through the shim, records it, and applies
the restart policy (with its backoff) or AutoRemove.

One thread per running container blocks in ``ShimClient.wait``; when the shim cannot be reached
any more, the exit it wrote to exit.json is used. A run is identified by its generation, so a
late monitor of an older run (after a remove, a restore, a restart) changes nothing. The exit
is recorded under the container's lock; events and the restart timer come after it.

A restart that fails (its host port taken meanwhile, a firewall error...) is logged and
recorded in State.Error, and tried again with the policy's backoff, as dockerd's restart
manager does: the timer thread never dies of it.

What it must never do: act while the daemon is closing (live restore will follow the
container again), or restart a container an explicit stop or a removal cancelled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.daemon.containers import cgroupfs
from pydeskd.daemon.containers.errors import Conflict
from pydeskd.daemon.containers.state import Status
from pydeskd.shim.client import ShimClient
from pydeskd.shim.paths import StatePaths
from pydeskd.shim.protocol import ProtocolError, ShimError

if TYPE_CHECKING:
    from pydeskd.daemon.containers.context import Live
    from pydeskd.daemon.containers.record import Container
    from pydeskd.daemon.containers.service import ContainerService

log = logging.getLogger(__name__)


def follow(svc: ContainerService, cid: str, shim: ShimClient, generation: int) -> None:
    """Waits for the exit of one run, then records it (unless the daemon is closing)."""
    try:
        st = shim.wait(timeout=None)
        code, at = st.exit_code if st.exit_code is not None else 255, st.exited_at
    except (OSError, ProtocolError, ShimError):
        if svc.closed:
            return
        code, at = exit_from_disk(svc.paths.shim_state(cid))
    if svc.closed:
        return
    on_exit(svc, cid, generation, code, at)

def exit_from_disk(state_dir: Path) -> tuple[int, str | None]:
    """The exit the shim recorded before it went away; 255 (Docker's "unknown") without one."""
    try:
        obj = json.loads(StatePaths(state_dir).exit_json.read_text())
        return int(obj["exit_code"]), str(obj.get("exited_at") or "") or None
    except (OSError, ValueError, KeyError, TypeError):
        return 255, None


def on_exit(svc: ContainerService, cid: str, generation: int, code: int, at: str | None) -> None:
    c = svc.store.find(cid)
    if c is None:
        return
    cond = svc.condition(cid)
    delay: float | None = None
    remove_now = False
    with cond:
        live = svc.live(c)
        if live.generation != generation or not (c.state.running or c.state.paused):
            return
        live.stop_prober()
        oom = cgroupfs.oom_killed(svc.cgroups_path(c))
        svc.clear_task(c)
        live.shim = None
        removing = c.state.removal_in_progress
        if not removing:
            delay = live.restart.should_restart(code, c.manually_stopped, c.restart_count,
                                                time.monotonic() - live.started_mono)
        if delay is not None:
            c.state.set_restarting(code, at, oom)
        else:
            c.state.set_stopped(code, at, oom)
            if removing:
                c.state.set_removing()
        svc.store.save(c)
        live.exits += 1
        cond.notify_all()
        remove_now = delay is None and not removing and bool(c.host_config.get("AutoRemove"))
    if oom:
        svc.publish(c, "oom")
    svc.publish(c, "die", exitCode=str(code))
    if delay is not None:
        timer = threading.Timer(delay, restart_after, (svc, cid, live.generation))
        timer.daemon = True
        timer.start()
    elif remove_now:
        threading.Thread(target=auto_remove, args=(svc, cid), daemon=True).start()


def restart_after(svc: ContainerService, cid: str, generation: int) -> None:
    c = svc.store.find(cid)
    if c is None or svc.closed:
        return
    with svc.condition(cid):
        live = svc.live(c)
        if live.generation != generation or live.restart.cancelled or \
                c.state.status is not Status.RESTARTING:
            return
        c.restart_count += 1
        try:
            svc.start_locked(c, live)
        except (NotFound, InvalidArgument) as err:  # gone, or never runnable: no retry
            c.state.set_stopped(c.state.exit_code or 128, error=str(err))
            svc.store.save(c)
            live.exits += 1
            svc.condition(cid).notify_all()
        except Exception as err:  # StartFailed, PortInUse...: try again later
            retry_failed_start(svc, c, live, err)


def retry_failed_start(svc: ContainerService, c: Container, live: Live, err: Exception) -> bool:
    """After a start the restart policy asked for failed: logs it, records it in State.Error
    and, when the policy allows another try, shows the container Restarting and tries again
    after the backoff (True); else it is Exited with the error (False). The caller holds the
    container's lock."""
    log.error("restarting container %s failed: %s", c.short_id, err)
    code = c.state.exit_code or 128
    delay = live.restart.should_restart(code, c.manually_stopped, c.restart_count, 0.0)
    if delay is None:
        c.state.set_stopped(code, error=str(err))
    else:
        c.state.set_restarting(code)
        c.state.set_error(str(err))
    svc.store.save(c)
    live.exits += 1
    svc.condition(c.id).notify_all()
    if delay is None:
        return False
    timer = threading.Timer(delay, restart_after, (svc, c.id, live.generation))
    timer.daemon = True
    timer.start()
    return True

def auto_remove(svc: ContainerService, cid: str) -> None:
    with contextlib.suppress(NotFound, Conflict):
        svc.remove(cid, force=True, volumes=True)
