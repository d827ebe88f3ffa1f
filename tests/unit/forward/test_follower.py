"""PortForwarder against a fake daemon and a recording backend: events, restarts, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydesk.forward.desired import Forward, Proto
from pydesk.forward.follower import PortForwarder
from pydesk.forward.state import ForwardState, load_state, save_state
from tests.unit.forward.fakes import FakeDaemon, RecordingBackend

SSH = Forward(Proto.TCP, "127.0.0.1", 40022, 22)


def container(name: str, port: int, running: bool = True) -> dict[str, Any]:
    return {"Id": name, "Name": f"/{name}", "State": {"Running": running},
            "Config": {"Labels": {}},
            "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0",
                                                      "HostPort": str(port)}]}}}


def fwd(port: int) -> Forward:
    return Forward(Proto.TCP, "127.0.0.1", port, port)


class Harness:
    def __init__(self, tmp_path: Path, backend: RecordingBackend, daemon: FakeDaemon) -> None:
        self.reports: list[tuple[str, str]] = []
        self.state_file = tmp_path / "forwards.json"
        self.daemon = daemon
        self.backend = backend
        self.forwarder = PortForwarder(
            daemon.open, backend, self.state_file, lambda m, e: self.reports.append((m, e)),
            retry_interval=0.2, poll=0.05, backoff=(0.05, 0.2))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.forwarder.run, args=(self.stop,))

    def start(self) -> Harness:
        self.thread.start()
        assert self.forwarder.connected.wait(5)
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "run() did not return after stop"

    def saved_state(self, predicate: Any, timeout: float = 2.0) -> ForwardState:
        """The state file once ``predicate(state)`` holds (it is written after the rules)."""
        deadline = time.monotonic() + timeout
        while not predicate(state := load_state(self.state_file)):
            assert time.monotonic() < deadline, f"state never matched: {state}"
            time.sleep(0.02)
        return state

    def rules_become(self, expected: set[Forward], timeout: float = 2.0) -> bool:
        return self.backend.wait_for(lambda rules: rules == expected, timeout)


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend({SSH})


@pytest.fixture
def harness(tmp_path: Path, backend: RecordingBackend, daemon: FakeDaemon) -> Iterator[Harness]:
    h = Harness(tmp_path, backend, daemon)
    yield h
    h.close()


def test_initial_sync_then_start_and_stop_events(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.containers["old"] = container("old", 8000)
    harness.start()
    assert harness.rules_become({SSH, fwd(8000)})
    daemon.containers["web"] = container("web", 8080)
    started = time.monotonic()
    daemon.emit("start", "web")
    assert harness.rules_become({SSH, fwd(8000), fwd(8080)})
    assert time.monotonic() - started < 1.0
    daemon.containers["web"] = container("web", 8080, running=False)
    daemon.emit("die", "web")
    assert harness.rules_become({SSH, fwd(8000)})
    del daemon.containers["old"]
    daemon.emit("destroy", "old")
    assert harness.rules_become({SSH})
    harness.saved_state(lambda s: s.made == frozenset() and s.wanted == frozenset())
    assert harness.reports == []


def test_irrelevant_events_do_not_inspect(harness: Harness, daemon: FakeDaemon) -> None:
    harness.start()
    before = len(daemon.requests)
    daemon.emit("exec_start", "web")
    daemon.emit("attach", "web")
    time.sleep(0.3)
    assert daemon.requests[before:] == []


def test_daemon_restart_resyncs(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.containers["web"] = container("web", 8080)
    harness.start()
    assert harness.rules_become({SSH, fwd(8080)})
    daemon.stop()
    # While it is down, the container stopped and another one started (no events seen).
    daemon.containers = {"api": container("api", 9090)}
    time.sleep(0.3)  # a few refused reconnects
    daemon.start()
    assert harness.rules_become({SSH, fwd(9090)}, timeout=3)


def test_taken_port_reported_once_then_recovers(harness: Harness, daemon: FakeDaemon,
                                                backend: RecordingBackend) -> None:
    backend.taken = {8080}
    daemon.containers["web"] = container("web", 8080)
    harness.start()
    time.sleep(0.6)  # several retries
    assert harness.reports == [("host port 8080 is already in use: container web's 80/tcp is "
                                "not reachable from the host", "host port 8080 is already in use")]
    (failed,) = load_state(harness.state_file).failed
    assert failed.forward.host_port == 8080 and failed.forward.container == "web"
    backend.taken = set()
    assert harness.rules_become({SSH, fwd(8080)})
    harness.saved_state(lambda s: s.failed == ())
    assert "is free again" in harness.reports[-1][0] and harness.reports[-1][1] == ""


def test_unavailable_backend_is_retried(harness: Harness, daemon: FakeDaemon,
                                        backend: RecordingBackend) -> None:
    backend.down = True
    daemon.containers["web"] = container("web", 8080)
    harness.start()
    time.sleep(0.2)
    backend.down = False
    assert harness.rules_become({SSH, fwd(8080)})


def test_new_agent_removes_only_its_own_stale_rules(tmp_path: Path, daemon: FakeDaemon) -> None:
    # The previous agent made 7070 and 8080; 7070's container is gone, 8080's still runs.
    backend = RecordingBackend({SSH, fwd(7070), fwd(8080), fwd(6060)})
    save_state(tmp_path / "forwards.json",
               ForwardState(made=frozenset({fwd(7070), fwd(8080)})))
    daemon.containers["web"] = container("web", 8080)
    h = Harness(tmp_path, backend, daemon).start()
    try:
        assert h.rules_become({SSH, fwd(8080), fwd(6060)})  # 6060 is not ours: left alone
        assert ("add", fwd(8080)) not in backend.calls      # live one kept, not re-made
        h.saved_state(lambda s: s.made == {fwd(8080)})
    finally:
        h.close()


def test_ipv6_warning_reported_once(harness: Harness, daemon: FakeDaemon) -> None:
    c = container("web", 8080)
    c["Config"]["Labels"]["dev.pydesk.host-port-bindings"] = \
        '{"80/tcp": [{"HostIp": "::1", "HostPort": "8080"}]}'
    c["HostConfig"] = {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}}
    daemon.containers["web"] = c
    harness.start()
    daemon.emit("start", "web")
    time.sleep(0.3)
    assert len(harness.reports) == 1
    assert "IPv4" in harness.reports[0][0]
    harness.saved_state(lambda s: s.warnings == (harness.reports[0][0],))


def test_stops_promptly_while_the_daemon_is_down(tmp_path: Path, daemon: FakeDaemon) -> None:
    daemon.up = False
    h = Harness(tmp_path, RecordingBackend(), daemon)
    h.thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    h.close()
    assert time.monotonic() - started < 1.0


def test_streams_that_end_at_once_are_not_a_hot_loop(tmp_path: Path, daemon: FakeDaemon) -> None:
    daemon.end_streams_at_once = True
    h = Harness(tmp_path, RecordingBackend(), daemon)
    h.thread.start()
    time.sleep(1.0)
    h.close()
    streams = [p for p in daemon.requests if p.startswith("/events")]
    # Reconnects paced by half the first backoff (0.025 s): at most ~40 a second, not thousands.
    assert 2 <= len(streams) <= 60, len(streams)
