"""Fixtures for pydesk-runc's own lifecycle tests (root): a `Box` bound to pydesk-runc.

The conformance suite (tests/integration/conformance) holds pydesk-runc to runc; these tests
cover what it cannot compare or what runc's tests do not reach: exec options, hooks, the
console socket, --log, failure clean-up. Cleanup is the Box's: nothing may be left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.conformance import Box
from tests.support.runtime_fixtures import _subreaper, rootfs_template  # noqa: F401
from tests.support.runtimes import PYDESK_RUNC, Runtime


@pytest.fixture
def box(tmp_path: Path, rootfs_template: Path) -> Iterator[Box]:
    harness = Box(Runtime("pydesk-runc", PYDESK_RUNC, tmp_path / "state"), tmp_path,
                  rootfs_template)
    try:
        yield harness
    finally:
        harness.cleanup()
