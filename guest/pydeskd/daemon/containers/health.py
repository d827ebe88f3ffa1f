"""Healthchecks: Docker's HEALTHCHECK probes, the State.Health they record, and their events.

Docker's rules (moby daemon/health.go): ``Test`` is ``["NONE"]`` (off), ``["CMD", argv...]`` or
``["CMD-SHELL", cmd]`` (``/bin/sh -c cmd``); defaults interval 30 s, timeout 30 s, retries 3,
start interval 5 s. Status starts ``starting``; a passing probe makes it ``healthy`` and resets
the failing streak; a failing one (non-zero exit, or a timeout: exit -1) adds to the streak, and
``retries`` of them make it ``unhealthy`` -- except inside the start period, where failures do
not count. The log keeps the last 5 results, outputs cut at 4096 bytes. A status change emits
``health_status: <status>``.

:func:`record_result` is the pure state step (unit-tested with fake times); :class:`Prober`
runs probes as execs on the container's shim, one thread per running container, and stops
with the run.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydeskd.daemon.containers.names import new_id
from pydeskd.daemon.containers.spec import exec_process
from pydeskd.shim.jsonlog import rfc3339nano
from pydeskd.shim.protocol import ProtocolError, ShimError, Stream

if TYPE_CHECKING:
    from pydeskd.daemon.containers.record import Container
    from pydeskd.daemon.containers.service import ContainerService
    from pydeskd.shim.client import ShimClient

NS = 1_000_000_000
DEFAULT_INTERVAL = 30 * NS
DEFAULT_TIMEOUT = 30 * NS
DEFAULT_START_INTERVAL = 5 * NS
DEFAULT_RETRIES = 3
MAX_LOG = 5
MAX_OUTPUT = 4096


@dataclass(frozen=True)
class Settings:
    argv: tuple[str, ...]
    interval: float
    timeout: float
    start_period: float
    start_interval: float
    retries: int

    @staticmethod
    def from_config(health: Mapping[str, Any] | None) -> Settings | None:
        """None when the container has no (or a NONE) healthcheck."""
        test = list((health or {}).get("Test") or [])
        if not test or test[0] == "NONE":
            return None
        if test[0] == "CMD-SHELL":
            argv: tuple[str, ...] = ("/bin/sh", "-c", " ".join(test[1:]))
        elif test[0] == "CMD":
            argv = tuple(test[1:])
        else:
            argv = tuple(test)
        if not argv:
            return None
        h = health or {}
        return Settings(argv, (h.get("Interval") or DEFAULT_INTERVAL) / NS,
                        (h.get("Timeout") or DEFAULT_TIMEOUT) / NS,
                        (h.get("StartPeriod") or 0) / NS,
                        (h.get("StartInterval") or DEFAULT_START_INTERVAL) / NS,
                        int(h.get("Retries") or DEFAULT_RETRIES))


def initial() -> dict[str, Any]:
    return {"Status": "starting", "FailingStreak": 0, "Log": []}


def record_result(health: Mapping[str, Any] | None, *, exit_code: int, output: str,
                  start: str, end: str, retries: int, in_start_period: bool,
                  ) -> dict[str, Any]:
    """The Health after one probe (a new dict)."""
    out = dict(health or initial())
    log = [*list(out.get("Log") or []), {"Start": start, "End": end, "ExitCode": exit_code,
                                          "Output": output[:MAX_OUTPUT]}]
    out["Log"] = log[-MAX_LOG:]
    if exit_code == 0:
        out["Status"], out["FailingStreak"] = "healthy", 0
    elif not in_start_period:
        out["FailingStreak"] = int(out.get("FailingStreak") or 0) + 1
        if out["FailingStreak"] >= retries:
            out["Status"] = "unhealthy"
    return out


class Prober:
    """Runs the probes of one container run until ``stop`` (or the run ends)."""

    def __init__(self, svc: ContainerService, c: Container, shim: ShimClient,
                 settings: Settings) -> None:
        self.svc, self.c, self.shim, self.settings = svc, c, shim, settings
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"health-{c.short_id}")

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        s = self.settings
        while True:
            in_start = time.monotonic() - self.started < s.start_period
            if self.stop.wait(s.start_interval if in_start else s.interval):
                return
            in_start = time.monotonic() - self.started < s.start_period
            start = rfc3339nano(time.time_ns())
            code, output = self._probe()
            if self.stop.is_set():
                return
            end = rfc3339nano(time.time_ns())
            with self.svc.store.lock(self.c.id):
                if self.stop.is_set() or not self.c.state.is_running:
                    return
                before = (self.c.state.health or {}).get("Status")
                self.c.state.health = record_result(
                    self.c.state.health, exit_code=code, output=output, start=start, end=end,
                    retries=s.retries, in_start_period=in_start)
                after = self.c.state.health["Status"]
                self.svc.store.save(self.c)
            if after != before:
                self.svc.publish(self.c, f"health_status: {after}")

    def _probe(self) -> tuple[int, str]:
        """(exit code, output); -1 for a timeout or a probe that could not run."""
        exec_id = "health-" + new_id()[:16]
        try:
            template = json.loads((self.svc.paths.bundle(self.c.id) / "config.json")
                                  .read_text()).get("process") or {}
            proc = exec_process(template, self.svc.paths.rootfs(self.c.id),
                                list(self.settings.argv))
            self.shim.exec(exec_id, proc)
            stream = self.shim.attach(exec_id)
            self.shim.start(exec_id)
        except (OSError, ValueError, ShimError, ProtocolError) as err:
            return -1, f"failed to run the healthcheck: {err}"
        output = bytearray()
        stream.sock.settimeout(self.settings.timeout)
        try:
            for kind, data in stream.chunks():
                if kind in (Stream.STDOUT, Stream.STDERR):
                    output += data
            st = self.shim.wait(exec_id, timeout=self.settings.timeout)
            code = st.exit_code if st.exit_code is not None else -1
        except (TimeoutError, OSError, ShimError, ProtocolError):
            with contextlib.suppress(Exception):
                self.shim.kill(9, exec_id)
            return -1, (f"Health check exceeded timeout ({self.settings.timeout:g}s)")
        finally:
            stream.close()
            with contextlib.suppress(Exception):
                self.shim.delete(exec_id)
        return code, output.decode("utf-8", "replace")
