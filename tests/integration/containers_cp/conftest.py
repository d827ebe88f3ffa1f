"""Fixtures for docker cp / export / update: the official docker CLI (and docker-py) against a
real ``pydeskd`` whose registry mirror serves ``library/busybox:latest`` (pulled once per
module); every container a test leaves is removed after it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import build_single
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry

BUSYBOX = "busybox:latest"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Pydeskd]:
    base = Path(tempfile.mkdtemp(prefix="pd-cp-", dir="/tmp"))
    try:
        build_single(base / "layout")
        with Registry(base / "registry") as registry:
            registry.push_layout(base / "layout", "library/busybox:latest")
            with Pydeskd(base / "d", config={"registry-mirrors": [registry.url]}) as d:
                d.docker("pull", "-q", BUSYBOX)
                yield d
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def d(daemon: Pydeskd) -> Iterator[Pydeskd]:
    yield daemon
    daemon.remove_containers(volumes=True)


def out(d: Pydeskd, *args: str, timeout: float = 60) -> str:
    """stdout of a docker command that must succeed, stripped."""
    return d.docker(*args, timeout=timeout).stdout.decode().strip()
