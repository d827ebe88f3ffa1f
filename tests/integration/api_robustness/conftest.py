"""Fixtures for the daemon's robustness tests: the acceptance suite's real ``pydeskd`` (one per
module, busybox pulled from a local registry mirror), emptied of containers after each test."""

from tests.integration.acceptance4.conftest import busybox_mirror, d, daemon

__all__ = ["busybox_mirror", "d", "daemon"]
