"""Fixtures for the image routes: a real ``ImageService`` in tmp_path behind a small FastAPI app.

Without root there is no overlayfs, so the service's snapshotter is the unpack tests'
``CopyingSnapshotter`` (overlay metadata, plain-directory snapshots): everything else -- content
store, image records, registry client, GC -- is the real thing, talking to the real registries
of ``tests/support/image_fixtures.py``. The daemon is a stand-in with ``images``, ``events`` (a
recorder) and ``containers``; the app is the daemon's own (``api.app.create_app``) with only
the image routes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pydeskd.api.app import create_app
from pydeskd.api.routes import images as image_routes
from pydeskd.containerd import stores
from pydeskd.containerd.images import ContainerUse
from pydeskd.containerd.registry import DockerConfig, RegistryHosts
from pydeskd.containerd.service import ImageService
from tests.support.image_fixtures import (  # noqa: F401
    fresh_registry,
    htpasswd_registry,
    image_layouts,
    registry,
    token_registry,
)
from tests.unit.containerd.test_unpack import CopyingSnapshotter


@dataclass(frozen=True)
class Published:
    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str]


@dataclass
class Events:
    """Records what the routes publish (thread-safe: streamed jobs publish from threads)."""

    published: list[Published] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self.published.append(Published(type, action, actor_id, dict(attributes or {})))

    def actions(self) -> list[str]:
        with self._lock:
            return [p.action for p in self.published]


@dataclass
class Containers:
    """Which image IDs a container uses (``image_in_use`` as the routes call it)."""

    using: dict[str, ContainerUse] = field(default_factory=dict)

    def image_in_use(self, image_id: str) -> ContainerUse | None:
        return self.using.get(image_id)


@dataclass
class Daemon:
    images: ImageService
    events: Events
    containers: Containers


def make_app(daemon: Daemon) -> FastAPI:
    """The daemon's own app (error mapping, version prefixes) with the image routes only."""
    return create_app(daemon, modules=(image_routes.__name__,))


def open_service(root: Path, mirrors: tuple[str, ...] = ()) -> ImageService:
    # No ~/.docker/config.json of whoever runs the tests: credentials come per request only.
    return ImageService(root, RegistryHosts(mirrors), DockerConfig(root / "no-config.json"))


@pytest.fixture(autouse=True)
def copying_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "OverlaySnapshotter", CopyingSnapshotter)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    svc = open_service(tmp_path / "images")
    yield Daemon(svc, Events(), Containers())
    svc.close()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[TestClient]:
    with TestClient(make_app(daemon)) as test_client:
        yield test_client


def stream(body: bytes) -> list[dict[str, Any]]:
    """The messages of a JSON progress stream; every line must end in \\r\\n, as Docker's."""
    assert body.endswith(b"\r\n"), body[-80:]
    return [json.loads(line) for line in body.split(b"\r\n") if line]
