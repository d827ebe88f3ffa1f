"""Fixtures for the snapshotter tier: a content store, an overlay snapshotter, mounted views."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pydeskd.containerd.content import FileStore
from pydeskd.containerd.progress import Collector
from pydeskd.containerd.snapshots import mount
from pydeskd.containerd.snapshots.overlay import OverlaySnapshotter
from pydeskd.containerd.unpack import unpack_layers
from tests.unit.containerd.archive.layers import image


@dataclass
class Env:
    tmp: Path
    store: FileStore
    sn: OverlaySnapshotter
    stack: contextlib.ExitStack

    def unpack(self, tars: list[bytes], compression: list[str] | None = None) -> str:
        manifest, config = image(self.store, tars, compression)
        return unpack_layers(manifest, config, self.store, self.sn, Collector())

    def view(self, name: str) -> Path:
        """Mount a read-only view of committed ``name``; unmounted at the end of the test."""
        key = f"view-{name}-{len(self.stack._exit_callbacks)}"
        mounts = self.sn.view(key, name)
        self.stack.callback(self.sn.remove, key)
        return self.stack.enter_context(mount.mounted(mounts))

    def active(self, parent: str, key: str = "container") -> Path:
        mounts = self.sn.prepare(key, parent)
        self.stack.callback(self.sn.remove, key)
        return self.stack.enter_context(mount.mounted(mounts))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with contextlib.ExitStack() as stack:
        yield Env(tmp_path, FileStore(tmp_path / "content"),
                  OverlaySnapshotter(tmp_path / "snapshots"), stack)
