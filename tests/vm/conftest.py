"""vm tier fixtures: the guest image (built once, cached by its recipe hash), a local registry
with the test images, and a VM driver on a private PYDESK_HOME that always tears QEMU down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image_fixtures import image_layouts, registry  # noqa: F401
from tests.vm.vmdriver import VmDriver, private_copy


@pytest.fixture(scope="session")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$PYDESK_VM_IMAGE_DIR if set (an image built elsewhere), else the image of the current
    sources, built now if missing (root, minutes the first time; cached by recipe hash);
    hard-linked into a session directory so the cache's pruning cannot pull it away."""
    override = os.environ.get("PYDESK_VM_IMAGE_DIR")
    if override:
        image = Path(override)
    else:
        from pydesk.vm.image import ensure_image

        image = ensure_image(lambda message: print(f"guest image: {message}", flush=True))
    return private_copy(image, tmp_path_factory.mktemp("guest-image") / image.name)


@pytest.fixture
def vm(tmp_path: Path, guest_image: Path) -> Iterator[VmDriver]:
    # A short home: QMP's unix socket path must fit in sun_path (108 bytes).
    driver = VmDriver(tmp_path / "h", guest_image)
    try:
        yield driver
    finally:
        driver.teardown()
