"""Fixtures for the container service's integration tests: a real ImageService holding busybox
(made by tests/support/images.py, imported as an OCI layout), real shims and pydesk-runc.

Each test gets a :class:`ContainerService` over a fresh short directory (unix socket paths are
limited to 108 bytes) and its own cgroup parent. At the end every container left is removed
through the service, then whatever might still be there is cleaned as the shim tests do:
processes mentioning the directory killed, mounts under it detached, the cgroup parent removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.containerd.service import ImageService
from pydeskd.daemon.containers.context import ServicePaths
from pydeskd.daemon.containers.service import ContainerService
from tests.integration.shim.conftest import PYDESK_RUNC, kill_processes_mentioning, remove_cgroups
from tests.support.images import build_single

IMAGE = "busybox:latest"


class Recorder:
    """Stands in for the daemon's event bus (any object with ``publish`` will do)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, str]]] = []

    def publish(self, type: str, action: str, actor_id: str,
                attributes: Any = None) -> None:
        self.events.append((type, action, actor_id, dict(attributes or {})))

    def actions(self, cid: str) -> list[str]:
        return [a for _, a, i, _ in self.events if i == cid]


@pytest.fixture(scope="module")
def images() -> Iterator[ImageService]:
    base = Path(tempfile.mkdtemp(prefix="pdci-", dir="/tmp"))
    service = ImageService(base / "images")
    loaded = service.import_layout(_layout(base))
    service.tag(loaded[0].id, IMAGE)
    yield service
    service.close()
    _unmount_under(base)
    shutil.rmtree(base, ignore_errors=True)


def _layout(base: Path) -> Path:
    layout = base / "layout"
    build_single(layout)
    return layout


class Env:
    def __init__(self, images: ImageService) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pdc-", dir="/tmp"))
        self.images = images
        self.events = Recorder()
        self.cgroup_parent = f"/pydesk-test-ctr-{uuid.uuid4().hex[:8]}"
        self.paths = ServicePaths(self.base / "d", self.base / "x", runtime=PYDESK_RUNC,
                                  cgroup_parent=self.cgroup_parent, durable=False)
        self.service = ContainerService(images, self.events, self.paths)

    def reopen(self) -> ContainerService:
        """A new service over the same directories (what a pydeskd restart does)."""
        self.service.close()
        self.service = ContainerService(self.images, self.events, self.paths)
        return self.service

    def cleanup(self) -> None:
        for c in self.service.store.all():
            with contextlib.suppress(Exception):
                self.service.remove(c.id, force=True, volumes=True)
        self.service.close()
        kill_processes_mentioning(str(self.base))
        _unmount_under(self.base)
        remove_cgroups(self.cgroup_parent.strip("/"))
        shutil.rmtree(self.base, ignore_errors=True)


def _unmount_under(base: Path) -> None:
    targets = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
               if line.split()[1].startswith(str(base))]
    for target in sorted(targets, key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.system(f"umount -l {target} 2>/dev/null")


def mounts_under(base: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(base))]


@pytest.fixture
def env(images: ImageService) -> Iterator[Env]:
    e = Env(images)
    yield e
    e.cleanup()
