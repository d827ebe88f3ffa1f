"""Pytest fixtures for image tests: built layouts and real registries. Conftests import them:

    from tests.support.image_fixtures import *  # noqa: F403

- ``image_layouts`` (session): every ``PREDEFINED`` image built once, ``{name: BuiltLayout}``.
- ``registry`` (session): anonymous registry with each image pushed as
  ``127.0.0.1:PORT/test/<name>:latest`` (``test/multiplatform:latest`` is the index); see
  ``registry.pushed["test/<name>:latest"]`` for the digests. Never stop it: use ``fresh_registry``.
- ``fresh_registry`` (function): an empty anonymous registry, free to stop/start or push to.
- ``htpasswd_registry`` (function): Basic auth, ``registry.credentials`` = (user, password),
  ``test/single:latest`` and ``test/multi:latest`` pushed.
- ``token_registry`` (function): Bearer auth through a ``TokenServer``
  (``registry.token_server``, reset after the setup pushes), same credentials and images.

``build_big`` is not here: it is large; bench and tests call it on demand.

What it must never do: share a registry that a test may break (stopped, auth changed) with
other tests, or leave a registry or token server process or directory behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pydeskd.containerd.oci import Descriptor
from tests.support.images import LATEST, PREDEFINED
from tests.support.registry import Registry
from tests.support.token_server import TokenServer

CREDENTIALS = ("pydesk", "pydesk-test-password")
AUTH_IMAGES = ("single", "multi")


@dataclass(frozen=True)
class BuiltLayout:
    name: str
    path: Path  # the OCI layout directory
    tag: str  # "latest"
    descriptor: Descriptor  # what the tag names (a manifest, or the index for multiplatform)


def build_layouts(root: Path) -> dict[str, BuiltLayout]:
    """Every predefined image in ``root/<name>``."""
    return {name: BuiltLayout(name, root / name, LATEST, build(root / name))
            for name, build in PREDEFINED.items()}


def push_images(registry: Registry, layouts: dict[str, BuiltLayout], names: tuple[str, ...],
                creds: tuple[str, str] | None = None) -> None:
    for name in names:
        registry.push_layout(layouts[name].path, f"test/{name}:latest", creds=creds)


@pytest.fixture(scope="session")
def image_layouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BuiltLayout]]:
    root = tmp_path_factory.mktemp("image-layouts")
    yield build_layouts(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory,
             image_layouts: dict[str, BuiltLayout]) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("registry")
    with Registry(workdir) as reg:
        push_images(reg, image_layouts, tuple(image_layouts))
        yield reg
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "fresh-registry") as reg:
        yield reg


@pytest.fixture
def htpasswd_registry(tmp_path: Path,
                      image_layouts: dict[str, BuiltLayout]) -> Iterator[Registry]:
    with Registry(tmp_path / "htpasswd-registry", htpasswd=CREDENTIALS) as reg:
        push_images(reg, image_layouts, AUTH_IMAGES, CREDENTIALS)
        yield reg


@pytest.fixture
def token_registry(tmp_path: Path, image_layouts: dict[str, BuiltLayout]) -> Iterator[Registry]:
    with TokenServer(tmp_path / "token-server", {CREDENTIALS[0]: CREDENTIALS[1]}) as ts, \
            Registry(tmp_path / "token-registry", token=ts) as reg:
        push_images(reg, image_layouts, AUTH_IMAGES, CREDENTIALS)
        ts.reset()
        yield reg


@pytest.fixture(scope="session")
def busybox_mirror() -> Iterator[Registry]:
    """A local registry holding the busybox test image as ``library/busybox:latest``, to be a
    daemon's ``registry-mirrors`` entry (so ``docker pull busybox`` works without internet)."""
    import tempfile

    from tests.support.images import build_single

    base = Path(tempfile.mkdtemp(prefix="pd-mirror-", dir="/tmp"))
    build_single(base / "layout")
    with Registry(base / "registry") as mirror:
        mirror.push_layout(base / "layout", "library/busybox:latest")
        yield mirror
    shutil.rmtree(base, ignore_errors=True)
