"""Restarts that fail (review finding 11): a restart policy's start that raises (a host port
taken meanwhile: PortInUse, a FailedPrecondition) is logged, recorded in State.Error and
tried again with the backoff; at daemon start one container's failure does not keep the
others down. Over a fake container service (no shims)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pydeskd.daemon.containers import monitor
from pydeskd.daemon.containers import restore as restore_mod
from pydeskd.daemon.containers.context import Live
from pydeskd.daemon.containers.record import Container
from pydeskd.daemon.containers.restart import RestartManager, RestartPolicy
from pydeskd.daemon.containers.state import Status
from pydeskd.network.portproxy import PortInUse


class Store:
    def __init__(self, records: list[Container]) -> None:
        self.records = {c.id: c for c in records}
        self.saved: list[str] = []

    def find(self, cid: str) -> Container | None:
        return self.records.get(cid)

    def save(self, c: Container) -> None:
        self.saved.append(c.id)

    def load(self) -> list[Container]:
        return list(self.records.values())


class FakeService:
    """What monitor.restart_after and restore.restore use of ContainerService."""

    def __init__(self, records: list[Container], failures: dict[str, int]) -> None:
        self.store = Store(records)
        self.closed = False
        self.network = None
        self.failures = failures            # cid -> starts that fail before one succeeds
        self.started: list[str] = []
        self._lives: dict[str, Live] = {}
        self._conds: dict[str, threading.Condition] = {}
        self.paths = self
        self.mounter = None

    def condition(self, cid: str) -> threading.Condition:
        return self._conds.setdefault(cid, threading.Condition(threading.RLock()))

    def live(self, c: Container) -> Live:
        policy = RestartPolicy.from_api(c.host_config.get("RestartPolicy"))
        return self._lives.setdefault(c.id, Live(RestartManager(policy)))

    def start_locked(self, c: Container, live: Live) -> None:
        if self.failures.get(c.id, 0) > 0:
            self.failures[c.id] -= 1
            raise PortInUse("Bind for 0.0.0.0:8080 failed: port is already allocated")
        self.started.append(c.id)
        c.state.set_running(4242)
        live.generation += 1

    def start(self, cid: str) -> None:
        c = self.store.records[cid]
        with self.condition(cid):
            live = self.live(c)
            live.restart = RestartManager(live.restart.policy)
            self.start_locked(c, live)

    def rootfs(self, cid: str) -> Path:
        return Path("/nonexistent/pydesk-test") / cid


def _container(n: int, policy: str = "always") -> Container:
    c = Container(f"{n:x}".ljust(64, "c"), f"/c{n}", "", "sh", [], {},
                  {"RestartPolicy": {"Name": policy}}, "sha256:x", "busybox")
    c.has_been_started = True
    c.state.set_stopped(1)
    return c


def _status(c: Container) -> Status:
    """Read afresh (mypy would keep an earlier assert's narrowing)."""
    return c.state.status


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_failed_restart_is_recorded_and_tried_again() -> None:
    c = _container(1)
    svc = FakeService([c], {c.id: 2})
    live = svc.live(c)
    c.state.set_restarting(1)
    monitor.restart_after(svc, c.id, live.generation)  # type: ignore[arg-type]
    # The failure is recorded, the container is still Restarting: the timer did not die.
    assert c.state.status is Status.RESTARTING
    assert "port is already allocated" in c.state.error
    _wait_for(lambda: svc.started == [c.id])
    assert _status(c) is Status.RUNNING and c.state.error == ""
    assert c.restart_count == 3


def test_on_failure_gives_up_after_its_retries_with_the_error_recorded() -> None:
    c = _container(1, "on-failure")
    c.host_config["RestartPolicy"]["MaximumRetryCount"] = 2
    svc = FakeService([c], {c.id: 10})
    live = svc.live(c)
    c.state.set_restarting(1)
    monitor.restart_after(svc, c.id, live.generation)  # type: ignore[arg-type]
    _wait_for(lambda: c.state.status is Status.EXITED)
    assert "port is already allocated" in c.state.error and svc.started == []


def test_at_daemon_start_a_failing_container_does_not_keep_the_others_down() -> None:
    first, second = _container(1), _container(2)
    svc = FakeService([first, second], {first.id: 1})
    restore_mod.restore(svc)  # type: ignore[arg-type]
    assert second.id in svc.started  # the loop went on
    assert "port is already allocated" in first.state.error or first.id in svc.started
    _wait_for(lambda: first.id in svc.started)  # and the failed one was tried again
