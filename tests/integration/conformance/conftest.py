"""Fixtures for the runtime conformance suite: every test runs once per runtime in RUNTIMES.

`box` is a `Box` bound to one runtime: it makes bundles (a copy of one prepared busybox
rootfs plus a config dict the test edits as data), runs them, and on teardown force-deletes
every container, kills what is left in each cgroup, removes the cgroup directories (parents
included), unmounts anything under the test's directory, reaps orphans and removes the files.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.busybox import make_rootfs
from tests.support.conformance import Box
from tests.support.runtimes import RUNTIMES, Runtime, reap_children, set_child_subreaper


@pytest.fixture(scope="package", autouse=True)
def _subreaper() -> Iterator[None]:
    # Inits of `create`d containers are orphaned by the runtime: as their reaper we can wait
    # for them and no zombie outlives the suite.
    set_child_subreaper()
    yield
    reap_children()
    # Later tests in this pytest process (shims that must end up under init) expect the default.
    set_child_subreaper(False)


@pytest.fixture(scope="package")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("pydesk-rootfs") / "rootfs"
    make_rootfs(path)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


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
