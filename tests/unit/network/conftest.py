"""Fixtures of the network layer's unit tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.network.world import World


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    yield World(tmp_path)
