"""A real pydeskd (busybox from a local mirror) for the follower tests, one per module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image_fixtures import busybox_mirror  # noqa: F401 -- a fixture
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry


@pytest.fixture(scope="module")
def daemon(busybox_mirror: Registry) -> Iterator[Pydeskd]:
    base = Path(tempfile.mkdtemp(prefix="pd-fwd-", dir="/tmp"))
    with Pydeskd(base, config={"registry-mirrors": [busybox_mirror.url]}) as d:
        d.docker("pull", "busybox")
        yield d
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def d(daemon: Pydeskd) -> Iterator[Pydeskd]:
    yield daemon
    daemon.remove_containers()
