"""Fixtures for the image tests (root): built OCI layouts and real registries on 127.0.0.1.

The fixtures live in tests/support/image_fixtures.py so that other image suites import the same.
"""

from __future__ import annotations

from tests.support.image_fixtures import (  # noqa: F401
    fresh_registry,
    htpasswd_registry,
    image_layouts,
    registry,
    token_registry,
)
