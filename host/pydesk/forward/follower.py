"""The port forwarder's loop: follow the guest's container events and keep the forwards in step.

What it is for: :class:`PortForwarder` runs in a thread of the host agent. It subscribes to the
guest daemon's container events, then lists the running containers and reconciles (subscribing
first, so no start between the list and the subscription is missed), then inspects each
container named by a start/stop/die/kill/destroy event and reconciles again: a published port
listens on the host well within a second of the container starting. When the stream breaks (the
guest daemon restarted) it reconnects with backoff and reconciles from scratch. Forwards that
failed (a taken host port) are retried every few seconds; every change of what failed is
reported through ``report(message, error)`` and kept in the state file for the CLI.
What it must never do: touch a rule it did not make (see :mod:`pydesk.forward.reconcile`), let
one failure stop the loop, or report the same failure twice in a row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydesk.forward.apiclient import ApiClient, ApiError, EventStream, Stream
from pydesk.forward.backend import BackendUnavailable, ForwardBackend
from pydesk.forward.desired import ContainerForwards, container_forwards, desired_forwards
from pydesk.forward.reconcile import apply, plan
from pydesk.forward.state import ForwardState, load_state, save_state

log = logging.getLogger(__name__)

Report = Callable[[str, str], None]
"""``report(message, error)``: the agent writes it as a status line; ``error`` is empty for
news that is not a failure."""

EVENT_FILTERS = {"type": ["container"]}
RELEVANT_ACTIONS = frozenset({"start", "restart", "die", "stop", "kill", "destroy"})
"""pause/unpause keep the ports; create/attach/exec do not change them."""
BACKEND_RETRY = 1.0
"""Seconds between attempts while QEMU does not answer QMP."""


class PortForwarder:
    def __init__(self, open_api: Callable[[], Stream], backend: ForwardBackend,
                 state_file: Path, report: Report, *, retry_interval: float = 5.0,
                 poll: float = 0.5, backoff: tuple[float, float] = (0.2, 5.0),
                 api_timeout: float = 10.0) -> None:
        self.api = ApiClient(open_api, api_timeout)
        self.backend = backend
        self.state_file = state_file
        self.report = report
        self.retry_interval = retry_interval
        self.poll = poll
        self.backoff = backoff
        self.containers: dict[str, ContainerForwards] = {}
        self.state = load_state(state_file)
        self.dirty = True
        self.backend_down = False
        self.last_attempt = 0.0
        self.connected = threading.Event()
        """Set while the event stream is up and the first reconcile ran (tests wait on it)."""

    # --- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; never raises for a guest or QEMU failure."""
        delay = self.backoff[0]
        while not stop.is_set():
            try:
                self.follow(stop)
                # The stream worked, then ended (a daemon restart): reconnect soon, but never
                # in a hot loop should a daemon end every stream at once.
                delay = self.backoff[0]
            except Exception as e:  # the channel, the daemon, a malformed answer: retry
                log.info("port forwarder: %s; retrying in %.1fs", e, delay)
                delay = min(delay * 2, self.backoff[1])
            finally:
                self.connected.clear()
            stop.wait(delay / 2 if delay == self.backoff[0] else delay)

    def follow(self, stop: threading.Event) -> None:
        """One connection to the event stream: a full resync, then events until it ends."""
        with self.api.events(EVENT_FILTERS) as events:
            self.resync()
            self.connected.set()
            self.follow_events(events, stop)

    def follow_events(self, events: EventStream, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                event = events.next(self.poll)
            except ApiError:
                log.info("port forwarder: the guest daemon's event stream ended")
                return
            if event is not None and self.relevant(event):
                self.refresh(event_container_id(event))
                self.dirty = True
            since = time.monotonic() - self.last_attempt
            if (self.dirty and (not self.backend_down or since >= BACKEND_RETRY)) or \
                    (self.state.failed and since >= self.retry_interval):
                self.reconcile()

    @staticmethod
    def relevant(event: dict[str, Any]) -> bool:
        action = str(event.get("Action") or event.get("status") or "")
        return event.get("Type", "container") == "container" and action in RELEVANT_ACTIONS

    # --- the containers -------------------------------------------------------------------------
    def resync(self) -> None:
        """Every running container again (the daemon may have restarted), then reconcile."""
        listed = self.api.get_json("/containers/json")
        fresh: dict[str, ContainerForwards] = {}
        for row in listed:
            cid = str(row.get("Id", ""))
            try:
                fresh[cid] = container_forwards(self.api.inspect_container(cid))
            except ApiError as e:
                if e.status != 404:  # gone since the list: nothing to forward
                    raise
        self.containers = fresh
        self.dirty = True
        self.reconcile()

    def refresh(self, container_id: str) -> None:
        try:
            self.containers[container_id] = container_forwards(
                self.api.inspect_container(container_id))
        except ApiError as e:
            if e.status != 404:
                raise
            self.containers.pop(container_id, None)

    # --- the forwards ---------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Brings the backend in step; a busy or gone QEMU leaves ``dirty`` set for the next
        tick."""
        self.last_attempt = time.monotonic()
        wanted = desired_forwards(self.containers.values())
        warnings = tuple(w for c in self.containers.values() for w in c.warnings)
        try:
            existing = self.backend.list()
            outcome = apply(plan(wanted, existing, self.state.made), self.backend)
        except BackendUnavailable as e:
            log.info("port forwarder: %s", e.message)
            self.dirty = self.backend_down = True
            return
        self.dirty = self.backend_down = False
        new = ForwardState(made=outcome.made, failed=outcome.failed, warnings=warnings,
                           wanted=wanted)
        self.announce(self.state, new)
        self.state = new
        save_state(self.state_file, new)

    def announce(self, old: ForwardState, new: ForwardState) -> None:
        """Reports what changed: new or different failures, recoveries, new warnings."""
        before = {f.forward: f for f in old.failed}
        for failed in new.failed:
            if before.get(failed.forward) != failed:
                self.report(failed.message(), failed.error)
        still_failed = {f.forward for f in new.failed}
        for f, failed_before in before.items():
            if f not in still_failed and f in new.made:
                self.report(f"host port {f.host_port} is free again: "
                            f"{failed_before.who()} is forwarded ({f.describe()})", "")
        for warning in new.warnings:
            if warning not in old.warnings:
                self.report(warning, "")


def event_container_id(event: dict[str, Any]) -> str:
    actor = event.get("Actor") or {}
    return str(actor.get("ID") or event.get("id") or "")
