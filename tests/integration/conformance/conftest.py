"""Fixtures for the runtime conformance suite: every test runs once per runtime in RUNTIMES.

`box` is a `Box` bound to one runtime: it makes bundles (a copy of one prepared busybox
rootfs plus a config dict the test edits as data), runs them, and on teardown force-deletes
every container, kills what is left in each cgroup, removes the cgroup directories (parents
included), unmounts anything under the test's directory, reaps orphans and removes the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.conformance import Box
from tests.support.runtime_fixtures import _subreaper, rootfs_template  # noqa: F401
from tests.support.runtimes import RUNTIMES, Runtime


@pytest.fixture(params=list(RUNTIMES))
def runtime_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def box(runtime_name: str, tmp_path: Path, rootfs_template: Path) -> Iterator[Box]:
    runtime = Runtime(runtime_name, RUNTIMES[runtime_name], tmp_path / "state")
    harness = Box(runtime, tmp_path, rootfs_template)
    try:
        yield harness
    finally:
        harness.cleanup()
