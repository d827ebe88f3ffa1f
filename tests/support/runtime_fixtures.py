"""Fixtures shared by the runtime suites (conformance, runtime_core): each conftest imports them.

`_subreaper` makes this pytest process the child subreaper for the package (the inits of
`create`d containers are orphaned by the runtime: as their reaper we can wait for them, and no
zombie outlives the suite), then restores the default, since later tests (shims that must end
up under init) expect it. `rootfs_template` is one busybox rootfs per package, copied per test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.busybox import make_rootfs
from tests.support.runtimes import reap_children, set_child_subreaper


@pytest.fixture(scope="package", autouse=True)
def _subreaper() -> Iterator[None]:
    set_child_subreaper()
    yield
    reap_children()
    set_child_subreaper(False)


@pytest.fixture(scope="package")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("pydesk-rootfs") / "rootfs"
    make_rootfs(path)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)
