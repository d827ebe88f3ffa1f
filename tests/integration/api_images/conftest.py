"""Fixtures for the image API with the real docker CLI: a real pydeskd whose registry mirror is
a local registry serving ``library/busybox:latest`` (the ``single`` test image), so that
``docker pull busybox`` works without the internet, as it does for Docker Desktop users behind a
mirror."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image_fixtures import (  # noqa: F401
    BuiltLayout,
    fresh_registry,
    htpasswd_registry,
    image_layouts,
    registry,
    token_registry,
)
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry


@pytest.fixture
def mirror(fresh_registry: Registry, image_layouts: dict[str, BuiltLayout]) -> Registry:
    fresh_registry.push_layout(image_layouts["single"].path, "library/busybox:latest")
    fresh_registry.push_layout(image_layouts["zstd"].path, "library/alpine:latest")
    return fresh_registry


@pytest.fixture
def pydeskd(tmp_path: Path, mirror: Registry) -> Iterator[Pydeskd]:
    with Pydeskd(tmp_path / "pydeskd", config={"registry-mirrors": [mirror.url]}) as daemon:
        yield daemon
