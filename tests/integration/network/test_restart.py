"""pydeskd killed -9 and started again: running containers keep their addresses, names and
published ports (a port proxy that died meanwhile is started again), and what a container that
exited meanwhile held is given back. Root."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from pydeskd.network.proxies import PortProxies
from tests.integration.network.conftest import BUSYBOX, curl, free_port, out, unique
from tests.integration.network.test_acceptance import _wget, eventually, httpd
from tests.support.pydeskd import Pydeskd

pytestmark = pytest.mark.integration


def kill9_and_restart(d: Pydeskd) -> None:
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.proc = None
    d.start()


def addresses(d: Pydeskd, name: str) -> dict[str, str]:
    nets = json.loads(out(d, "inspect", name))[0]["NetworkSettings"]["Networks"]
    return {net: settings["IPAddress"] for net, settings in nets.items()}


def test_kill9_keeps_addresses_names_and_ports(d: Pydeskd) -> None:
    net = unique("keep")
    out(d, "network", "create", net)
    port = free_port()
    server = unique("srv")
    httpd(d, server, "--network", net, "--network-alias", "web", "-p", f"{port}:80")
    plain = httpd(d, unique("plain"))
    short = out(d, "run", "-d", BUSYBOX, "sleep", "2")
    assert f"hello from {server}" in eventually(lambda: curl(f"http://127.0.0.1:{port}/"))
    before = {name: addresses(d, name) for name in (server, plain)}
    proxies = list((d.exec_root / "network" / "proxies").glob("*.pid"))
    assert len(proxies) == 1

    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.proc = None
    # While pydeskd is down: the proxy dies and the short container exits.
    pid = int(proxies[0].read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(2.5)
    d.start()

    assert {name: addresses(d, name) for name in (server, plain)} == before
    assert f"hello from {server}" in eventually(lambda: curl(f"http://127.0.0.1:{port}/"))
    assert out(d, "port", server) == f"80/tcp -> 0.0.0.0:{port}"
    assert eventually(lambda: _alive(proxies[0]))
    for name in (server, "web"):
        assert f"hello from {server}" in eventually(
            lambda name=name: _wget(d, net, name))  # type: ignore[misc]
    # The short one exited while pydeskd was down (or, on a slow machine, just after): its
    # address and namespace are given back either way.
    running = {json.loads(out(d, "inspect", n))[0]["Id"] for n in (server, plain)}
    eventually(lambda: _gone(d, short, running), timeout=20)


def _gone(d: Pydeskd, short: str, running: set[str]) -> str:
    exited = json.loads(out(d, "inspect", short))[0]
    assert exited["State"]["Running"] is False
    assert exited["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""
    assert {p.name for p in (d.exec_root / "netns").iterdir()} == running
    return "gone"


def _alive(pid_file: Path) -> str:
    assert PortProxies().alive(pid_file)
    return "alive"


def test_restart_twice_in_a_row_changes_nothing(d: Pydeskd) -> None:
    name = httpd(d, unique("steady"))
    before = addresses(d, name)
    kill9_and_restart(d)
    kill9_and_restart(d)
    assert addresses(d, name) == before
    fresh = out(d, "run", "-d", BUSYBOX, "sleep", "60")
    assert addresses(d, fresh)["bridge"] not in before.values()
