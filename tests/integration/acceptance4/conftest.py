"""Fixtures for issue 4's acceptance suite: the official docker CLI (and docker-py) against a
real ``pydeskd`` whose registry mirror is a local registry serving ``library/busybox:latest``.

One registry per session (busybox pushed once), one daemon per test module (busybox pulled
once), and after each test every container it left is removed (``rm -f``), so the tests of a
module do not see each other's containers. The daemon's own stop kills whatever still names
its roots and unmounts under them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image_fixtures import busybox_mirror  # noqa: F401 -- a fixture
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry

BUSYBOX = "busybox:latest"


@pytest.fixture(scope="module")
def daemon(busybox_mirror: Registry) -> Iterator[Pydeskd]:
    base = Path(tempfile.mkdtemp(prefix="pd-acc-", dir="/tmp"))
    with Pydeskd(base, config={"registry-mirrors": [busybox_mirror.url]}) as d:
        d.docker("pull", "-q", BUSYBOX)
        yield d
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def d(daemon: Pydeskd) -> Iterator[Pydeskd]:
    """The module's daemon, emptied of containers after the test."""
    yield daemon
    daemon.remove_containers()


def out(d: Pydeskd, *args: str, timeout: float = 60) -> str:
    """stdout of a docker command that must succeed, stripped."""
    return d.docker(*args, timeout=timeout).stdout.decode().strip()
