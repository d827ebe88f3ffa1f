"""Live restore: what ``ContainerService.restore`` does at daemon start.

For every record: a container whose shim still answers is running again (its monitor is
re-attached, so its exit is recorded and its restart policy applies as before); one whose shim
is gone gets its exit recorded (from the shim's exit.json when the shim wrote it, else 255)
and its leftovers cleaned; a removal a crash interrupted is finished; then the restart
policies say which stopped containers start again (``always``, ``unless-stopped``...); one
that fails to start is logged, its error recorded, and retried with the policy's backoff,
and the others still start.

What it must never do: stop or restart a container whose shim is alive.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING

from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.containerd.snapshots import mount as snapmount
from pydeskd.daemon.containers import health
from pydeskd.daemon.containers.errors import Conflict, NotModified
from pydeskd.daemon.containers.mounts import Resolved
from pydeskd.daemon.containers.record import Container
from pydeskd.daemon.containers.state import Status
from pydeskd.shim.client import ShimClient

if TYPE_CHECKING:
    from pydeskd.daemon.containers.service import ContainerService

log = logging.getLogger(__name__)


def restore(svc: ContainerService) -> list[Container]:
    """At daemon start: load the records, re-attach to live shims, record the exits of
    containers whose shim is gone, finish interrupted removals, and start again what the
    restart policies say. Returns the containers found running."""
    running: list[Container] = []
    to_start: list[Container] = []
    for c in svc.store.load():
        live = svc.live(c)
        if c.state.removal_in_progress:
            with contextlib.suppress(NotFound, Conflict):
                c.state.removal_in_progress = False
                svc.remove(c.id, force=True)
            continue
        if c.state.running or c.state.paused:
            client = ShimClient.for_state_dir(svc.paths.shim_state(c.id))
            if not c.state.restarting and client.alive():
                with svc.condition(c.id):
                    live.generation += 1
                    live.shim = client
                    svc.volumes.adopt(c.id, [Resolved.from_json(m) for m in c.resolved_mounts])
                    settings = health.Settings.from_config(c.config.get("Healthcheck"))
                    if settings is not None:
                        live.prober = health.Prober(svc, c, client, settings)
                        live.prober.start()
                    live.started_mono = time.monotonic()
                    monitor = threading.Thread(target=svc.monitor,
                                               args=(c.id, client, live.generation),
                                               name=f"monitor-{c.short_id}", daemon=True)
                    live.monitors.append(monitor)
                    monitor.start()
                running.append(c)
                continue
            with svc.condition(c.id):
                code, at = (c.state.exit_code, c.state.finished_at) if c.state.restarting \
                    else svc.exit_from_disk(c.id)
                svc.clear_task(c)
                c.state.set_stopped(code, at)
                svc.store.save(c)
            svc.publish(c, "die", exitCode=str(code))
        else:
            with contextlib.suppress(OSError):
                snapmount.unmount(svc.paths.rootfs(c.id), svc.mounter)
        policy = live.restart.policy
        if c.has_been_started and c.state.status is Status.EXITED and \
                policy.restarts_at_daemon_start(c.manually_stopped, c.state.exit_code):
            to_start.append(c)
    if svc.network is not None:
        # Before restarts: what dead tasks held is given back first; running containers keep
        # their addresses, names and ports (proxies that died are started again).
        try:
            svc.network.restore({c.id for c in running})
        except Exception:
            log.exception("restoring the network state failed")
    for c in to_start:
        try:
            svc.start(c.id)
        except (NotModified, Conflict, NotFound):
            continue
        except Exception as err:  # one container's failure stops no other
            _start_failed(svc, c, err)
    return running


def _start_failed(svc: ContainerService, c: Container, err: Exception) -> None:
    """A restart at daemon start failed (its port taken meanwhile...): logged, recorded in
    State.Error and, unless the command can never run, tried again with the policy's
    backoff (dockerd logs it and goes on to the next container)."""
    from pydeskd.daemon.containers import monitor

    with svc.condition(c.id):
        if svc.store.find(c.id) is None or c.state.is_running:
            return
        if isinstance(err, InvalidArgument):  # CommandNotRunnable: another try fails alike
            log.error("restarting container %s failed: %s", c.short_id, err)
            c.state.set_error(str(err))
            svc.store.save(c)
            return
        monitor.retry_failed_start(svc, c, svc.live(c), err)
