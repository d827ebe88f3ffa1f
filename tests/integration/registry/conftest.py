"""Fixtures for the registry client's integration tests (root): real docker-registry instances
on 127.0.0.1 with the predefined images (tests/support/image_fixtures.py)."""

from __future__ import annotations

from tests.support.image_fixtures import (  # noqa: F401
    fresh_registry,
    htpasswd_registry,
    image_layouts,
    registry,
    token_registry,
)
