"""PortForwarder against a real pydeskd (unix socket opener) with a recording backend: a
published port is forwarded within a second, goes when the container stops, and forwarding
resyncs after the daemon is killed and restarted."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pydesk.forward import HOST_PORT_BINDINGS_LABEL
from pydesk.forward.desired import Forward, Proto
from pydesk.forward.follower import PortForwarder
from pydesk.forward.state import ForwardState, load_state
from tests.integration.forward.qemu_slirp import free_port
from tests.support.pydeskd import Pydeskd
from tests.unit.forward.fakes import RecordingBackend

SSH = Forward(Proto.TCP, "127.0.0.1", 40022, 22)


class Running:
    def __init__(self, d: Pydeskd, tmp_path: Path) -> None:
        self.backend = RecordingBackend({SSH})
        self.reports: list[tuple[str, str]] = []
        self.state_file = tmp_path / "forwards.json"
        self.forwarder = PortForwarder(self.open, self.backend, self.state_file,
                                       lambda m, e: self.reports.append((m, e)),
                                       backoff=(0.1, 0.5))
        self.d = d
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.forwarder.run, args=(self.stop,))

    def open(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(self.d.socket))
        except OSError:
            s.close()
            raise
        return s

    def rules(self) -> frozenset[Forward]:
        return self.backend.list() - {SSH}

    def wait_rules(self, expected: set[Forward], timeout: float) -> float:
        """Seconds until the backend holds exactly SSH + ``expected``."""
        started = time.monotonic()
        assert self.backend.wait_for(lambda r: r - {SSH} == expected, timeout), \
            f"rules {set(self.rules())}, wanted {expected}; reports {self.reports}"
        return time.monotonic() - started


    def saved(self, predicate: Callable[[ForwardState], bool], timeout: float = 2) -> ForwardState:
        """The state file once ``predicate`` holds (it is written just after the rules)."""
        deadline = time.monotonic() + timeout
        while not predicate(state := load_state(self.state_file)):
            assert time.monotonic() < deadline, f"state never matched: {state}"
            time.sleep(0.02)
        return state


@pytest.fixture
def fwd(d: Pydeskd, tmp_path: Path) -> Iterator[Running]:
    r = Running(d, tmp_path)
    r.thread.start()
    assert r.forwarder.connected.wait(10)
    yield r
    r.stop.set()
    r.thread.join(5)
    assert not r.thread.is_alive()


def run(d: Pydeskd, *args: str) -> str:
    return d.docker("run", "-d", *args, "busybox", "sleep", "1000").stdout.decode().strip()


def rule(port: int, ip: str = "127.0.0.1", proto: Proto = Proto.TCP) -> Forward:
    return Forward(proto, ip, port, port)


def test_run_forwards_within_a_second_and_stop_removes(d: Pydeskd, fwd: Running) -> None:
    port = free_port()
    cid = run(d, "-p", f"{port}:80")
    assert fwd.wait_rules({rule(port)}, timeout=1.0) < 1.0
    (made,) = fwd.saved(lambda s: len(s.made) == 1).made
    assert made.container_port == "80/tcp" and made.container
    d.docker("stop", "-t", "0", cid)
    fwd.wait_rules(set(), timeout=2)
    d.docker("start", cid)
    fwd.wait_rules({rule(port)}, timeout=1.0)
    d.docker("rm", "-f", cid)
    fwd.wait_rules(set(), timeout=2)
    assert fwd.reports == []


def test_publish_all_udp_and_the_proxys_label(d: Pydeskd, fwd: Running) -> None:
    tcp, udp, anywhere = free_port(), free_port(socket.SOCK_DGRAM), free_port()
    run(d, "-p", f"{tcp}:80", "-p", f"{udp}:53/udp")
    label = json.dumps({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(anywhere)}],
                        "81/tcp": [{"HostIp": "::1", "HostPort": ""}]})
    run(d, "--label", f"{HOST_PORT_BINDINGS_LABEL}={label}", "-p", f"{anywhere}:80", "-p", "81")
    cid = run(d, "--expose", "7000", "-P")
    inspect = json.loads(d.docker("inspect", cid).stdout)[0]
    ephemeral = int(inspect["NetworkSettings"]["Ports"]["7000/tcp"][0]["HostPort"])
    fwd.wait_rules({rule(tcp), rule(udp, proto=Proto.UDP), rule(anywhere, "0.0.0.0"),
                    rule(ephemeral)}, timeout=3)
    (warning,) = fwd.saved(lambda s: len(s.warnings) == 1).warnings
    assert "81/tcp is not forwarded to ::1" in warning
    assert fwd.reports == [(warning, "")]


def test_daemon_killed_and_restarted_resyncs(d: Pydeskd, fwd: Running) -> None:
    kept, after = free_port(), free_port()
    run(d, "-p", f"{kept}:80")
    fwd.wait_rules({rule(kept)}, timeout=2)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)   # containers keep running (live restore)
    d.proc.wait()
    d.proc = None
    # While the daemon is down, the forward disappears behind the forwarder's back: only a
    # resync from scratch on reconnect brings it back.
    fwd.backend.rules.discard(rule(kept))
    time.sleep(0.3)
    assert not fwd.forwarder.connected.is_set()
    d.start()
    fwd.wait_rules({rule(kept)}, timeout=10)
    assert fwd.forwarder.connected.wait(5)
    run(d, "-p", f"{after}:80")          # and events are followed again
    fwd.wait_rules({rule(kept), rule(after)}, timeout=1.0)
