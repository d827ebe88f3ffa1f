"""Issue 5's review, published ports and restarts through the docker CLI (root): a restart
policy whose host port was taken while pydeskd was down retries until the port is free and
does not keep the other containers down (#11); ``-p 0.0.0.0:P`` is IPv4 only and
``-p [::]:P`` IPv6 only (#20); ``-p`` on an internal network publishes nothing (#18);
``--network container:X`` resolves the names of X's network (#14)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.integration.network.conftest import BUSYBOX, curl, free_port, out, unique
from tests.integration.network.test_acceptance import _BY_NAME, eventually, http_get, httpd, run
from tests.support.pydeskd import Pydeskd

pytestmark = pytest.mark.integration


def _state(d: Pydeskd, name: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(out(d, "inspect", name))[0]["State"]
    return state


def _refused(url: str) -> bool:
    try:
        curl(url, timeout=3)
    except AssertionError:
        return True
    return False


def test_a_restart_whose_port_is_taken_retries_and_the_others_start(d: Pydeskd) -> None:
    port = free_port()
    web = httpd(d, unique("web"), "--restart=always", "-p", f"{port}:80")
    other = out(d, "run", "-d", "--restart=always", BUSYBOX, "sleep", "600")
    assert "hello" in eventually(lambda: curl(f"http://127.0.0.1:{port}/"))
    pids = [int(str(_state(d, c)["Pid"])) for c in (web, other)]
    proxies = list((d.exec_root / "network" / "proxies").glob("*.pid"))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.proc = None
    # While pydeskd is down both containers and the proxy die, and someone takes the port.
    for pid in [*pids, *(int(p.read_text()) for p in proxies)]:
        os.kill(pid, signal.SIGKILL)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:  # the killed proxy lets go of the port a moment later
            try:
                holder.bind(("0.0.0.0", port))
                break
            except OSError:
                assert time.monotonic() < deadline, "the port was never free"
                time.sleep(0.05)
        holder.listen()
    finally:
        d.start()
    try:
        assert _state(d, other)["Running"] is True  # the loop went on after the failure

        def failed() -> str:
            state = _state(d, web)
            assert "port is already allocated" in str(state["Error"]), state
            return "recorded"

        eventually(failed)
    finally:
        holder.close()
    # The port is free again: a retry of the backoff brings it up.
    assert "hello" in eventually(lambda: curl(f"http://127.0.0.1:{port}/"), timeout=90)
    state = _state(d, web)
    assert state["Running"] is True and state["Error"] == ""


def test_an_explicit_address_family_is_the_only_one_published(d: Pydeskd) -> None:
    if not Path("/proc/net/if_inet6").exists():
        pytest.fail("this host has no IPv6: the families cannot be told apart")
    v4, v6 = free_port(), free_port()
    httpd(d, unique("v4"), "-p", f"0.0.0.0:{v4}:80")
    httpd(d, unique("v6"), "-p", f"[::]:{v6}:80")
    assert "hello" in eventually(lambda: curl(f"http://127.0.0.1:{v4}/"))
    assert _refused(f"http://[::1]:{v4}/")
    assert "hello" in eventually(lambda: curl(f"http://[::1]:{v6}/"))
    assert _refused(f"http://127.0.0.1:{v6}/")


def test_ports_on_an_internal_network_are_not_published(d: Pydeskd) -> None:
    net = unique("sealed")
    out(d, "network", "create", "--internal", net)
    port = free_port()
    name = httpd(d, unique("sealed"), "--network", net, "-p", f"{port}:80")
    assert _state(d, name)["Running"] is True
    assert out(d, "port", name) == ""
    with socket.socket() as probe:  # nobody holds the port
        probe.bind(("0.0.0.0", port))


def test_container_mode_resolves_the_names_of_the_joined_network(d: Pydeskd) -> None:
    net = unique("joined")
    out(d, "network", "create", net)
    server = unique("srv")
    httpd(d, server, "--network", net, "--network-alias", "web")
    side = out(d, "run", "-d", "--network", net, BUSYBOX, "sleep", "600")
    # busybox nslookup (the static busybox's wget cannot resolve), then HTTP to the address.
    done = run(d, "--network", f"container:{side}", BUSYBOX, "sh", "-c",
               _BY_NAME.format(name="web") + http_get("$ip"))
    assert f"hello from {server}" in done.stdout.decode(), done.stderr.decode()
