"""Fixtures for pydesk-runc's own lifecycle tests (root): a `Box` bound to pydesk-runc.

The conformance suite (tests/integration/conformance) holds pydesk-runc to runc; these tests
cover what it cannot compare or what runc's tests do not reach: exec options, hooks, the
console socket, --log, failure clean-up. Cleanup is the Box's: nothing may be left behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.busybox import make_rootfs
from tests.support.conformance import Box
from tests.support.runtimes import PYDESK_RUNC, Runtime, reap_children, set_child_subreaper


@pytest.fixture(scope="package", autouse=True)
def _subreaper() -> Iterator[None]:
    set_child_subreaper()
    yield
    reap_children()
    # Later tests in this pytest process (shims that must end up under init) expect the default.
    set_child_subreaper(False)


@pytest.fixture(scope="package")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("pydesk-core-rootfs") / "rootfs"
    make_rootfs(path)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def box(tmp_path: Path, rootfs_template: Path) -> Iterator[Box]:
    harness = Box(Runtime("pydesk-runc", PYDESK_RUNC, tmp_path / "state"), tmp_path,
                  rootfs_template)
    try:
        yield harness
    finally:
        harness.cleanup()
