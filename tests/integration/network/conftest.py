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
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.network.driver import Names
from pydeskd.network.nft import table_name
from tests.support.image_fixtures import busybox_mirror  # noqa: F401 -- a fixture
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry

BUSYBOX = "busybox:latest"
_subnets = itertools.count(1)
_daemon_roots: list[Path] = []
_user_bridges: set[str] = set()
_veths: set[str] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def free_subnet() -> str:
    """A /24 no other test of this run uses (10.<200 + pid % 50>.<n>.0/24)."""
    return f"10.{200 + os.getpid() % 50}.{next(_subnets)}.0/24"


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


def daemon_root(d: Pydeskd) -> None:
    _daemon_roots.append(d.tmp_dir)


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def _nft_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def _chains() -> set[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
    return {line.split()[0][1:] for line in out.stdout.splitlines()
            if line.startswith(":PYDESK")}


@pytest.fixture(scope="session", autouse=True)
def no_leftovers() -> Iterator[None]:
    """After the suite: nothing of this suite's daemons is left on the host -- their bridges
    (default and user), their containers' veths, firewall chains, netns files, port proxies.
    Other suites' daemons may run meanwhile: only ours are looked at."""
    yield
    links, chains, tables = _links(), _chains(), _nft_tables()
    for root in _daemon_roots:
        names = Names.for_daemon(root / "data", root / "exec")
        assert names.default_bridge not in links
        assert not {c for c in chains if c.startswith(names.chain_prefix + "-")}, chains
        assert table_name(names.chain_prefix) not in tables
        for directory in (names.netns_dir, names.proxies_dir):
            assert not directory.exists() or not any(directory.iterdir()), directory
    left = (_user_bridges | _veths) & links
    assert not left, f"links left behind: {sorted(left)}"


@pytest.fixture(scope="module")
def daemon(busybox_mirror: Registry) -> Iterator[Pydeskd]:
    base = Path(tempfile.mkdtemp(prefix="pd-net-", dir="/tmp"))
    with Pydeskd(base, config={"registry-mirrors": [busybox_mirror.url]}) as d:
        daemon_root(d)
        d.docker("pull", "-q", BUSYBOX)
        yield d
        remember_bridges(d)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def d(daemon: Pydeskd) -> Iterator[Pydeskd]:
    """The module's daemon, emptied of containers and user networks after the test."""
    yield daemon
    if daemon.proc is None or daemon.proc.poll() is not None:
        pytest.fail(f"pydeskd died during the test:\n{daemon.log_tail(60)}")
    ids = [i.decode() for i in daemon.docker("ps", "-aq", check=False).stdout.split()]
    if ids:
        remember_veths(daemon, ids)
        daemon.docker("rm", "-f", *ids, check=False)
    remember_bridges(daemon)
    daemon.docker("network", "prune", "-f", check=False)


def remember_veths(d: Pydeskd, ids: list[str]) -> None:
    """The host ends of the containers' veths (named from container and network IDs)."""
    done = d.docker("inspect", *ids, check=False)
    for c in json.loads(done.stdout or b"[]"):
        for settings in (c.get("NetworkSettings") or {}).get("Networks", {}).values():
            if settings.get("NetworkID"):
                _veths.add(Names.host_veth(c["Id"], settings["NetworkID"]))


def remember_bridges(d: Pydeskd) -> None:
    """The user networks' bridges, for the final check (pd-<12 hex of the ID>)."""
    ids = d.docker("network", "ls", "-q", "--no-trunc", "--filter", "type=custom",
                   check=False).stdout.split()
    _user_bridges.update(f"pd-{i.decode()[:12]}" for i in ids)


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
