"""Fixtures for issue 5's acceptance suite: container networking through the docker CLI.

One local registry serving busybox per session, one real ``pydeskd`` per module (busybox
pulled once). ``d`` removes the test's containers and networks afterwards; the session's last
check (``no_leftovers``) asserts that no veth, bridge, firewall chain, netns or port proxy of
these daemons outlived them. Host ports come from ``free_port`` (bound to 0 by the kernel,
never a fixed number another suite may be using), subnets from ``free_subnet`` (a /24 in
10.<pid-derived>.x.0, unique per test).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import build_single
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry

BUSYBOX = "busybox:latest"
_subnets = itertools.count(1)
_daemon_roots: list[Path] = []


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def free_subnet() -> str:
    """A /24 no other test of this run uses (10.<200 + pid % 50>.<n>.0/24)."""
    return f"10.{200 + os.getpid() % 50}.{next(_subnets)}.0/24"


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


@pytest.fixture(scope="session")
def busybox_mirror() -> Iterator[Registry]:
    base = Path(tempfile.mkdtemp(prefix="pd-net-reg-", dir="/tmp"))
    build_single(base / "layout")
    with Registry(base / "registry") as registry:
        registry.push_layout(base / "layout", "library/busybox:latest")
        yield registry
    shutil.rmtree(base, ignore_errors=True)


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def _chains() -> set[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
    return {line.split()[0][1:] for line in out.stdout.splitlines()
            if line.startswith(":PYDESK")}


@pytest.fixture(scope="session", autouse=True)
def no_leftovers() -> Iterator[None]:
    """After the suite: nothing of the suite's daemons is left on the host."""
    links_before, chains_before = _links(), _chains()
    yield
    new_links = {name for name in _links() - links_before
                 if name.startswith(("pd-", "pd0-", "pdv", "pydesk"))}
    new_chains = _chains() - chains_before
    assert not new_links, f"links left behind: {sorted(new_links)}"
    assert not new_chains, f"firewall chains left behind: {sorted(new_chains)}"
    for root in _daemon_roots:
        netns = root / "exec" / "netns"
        assert not netns.exists() or not any(netns.iterdir()), f"netns left in {netns}"


@pytest.fixture(scope="module")
def daemon(busybox_mirror: Registry) -> Iterator[Pydeskd]:
    base = Path(tempfile.mkdtemp(prefix="pd-net-", dir="/tmp"))
    _daemon_roots.append(base)
    with Pydeskd(base, config={"registry-mirrors": [busybox_mirror.url]}) as d:
        d.docker("pull", "-q", BUSYBOX)
        yield d
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def d(daemon: Pydeskd) -> Iterator[Pydeskd]:
    """The module's daemon, emptied of containers and user networks after the test."""
    yield daemon
    if daemon.proc is None or daemon.proc.poll() is not None:
        return
    ids = daemon.docker("ps", "-aq", check=False).stdout.split()
    if ids:
        daemon.docker("rm", "-f", *(i.decode() for i in ids), check=False)
    daemon.docker("network", "prune", "-f", check=False)


def out(d: Pydeskd, *args: str, timeout: float = 60) -> str:
    return d.docker(*args, timeout=timeout).stdout.decode().strip()


def curl(url: str, *, netns: str | None = None, timeout: float = 10) -> str:
    argv = ["curl", "-sS", "--max-time", str(timeout), url]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5,
                          check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout
