"""The desktop scenario in passthrough mode reuses the CLI tier's daemon fixtures."""

from tests.integration.cli.conftest import d, daemon  # noqa: F401 -- fixtures
from tests.support.image_fixtures import busybox_mirror  # noqa: F401 -- a fixture
