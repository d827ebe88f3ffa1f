"""unpack_layers: chainIDs, skip of existing layers, diff_id checks, progress, concurrency.

Without root there is no overlayfs, so these tests use ``CopyingSnapshotter``: the overlay
snapshotter's metadata and directories, but every new ACTIVE snapshot starts as a full copy of
its parent and is handed out as a bind mount, so layers apply in plain mode. The real overlay
path is in tests/integration/snapshots.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pydeskd.containerd.content import FileStore
from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument
from pydeskd.containerd.progress import Collector, Status
from pydeskd.containerd.snapshots import Kind, Mount
from pydeskd.containerd.snapshots.overlay import OverlaySnapshotter
from pydeskd.containerd.unpack import chain_id, chain_ids, unpack_layers
from tests.unit.containerd.archive.layers import (
    directory,
    file,
    image,
    layer,
    opaque,
    sha256,
    whiteout,
)


class CopyingSnapshotter(OverlaySnapshotter):
    """Overlay metadata, plain-directory snapshots (see the module docstring)."""

    def prepare(self, key: str, parent: str = "",
                labels: Mapping[str, str] | None = None) -> list[Mount]:
        mounts = super().prepare(key, parent, labels)
        if mounts[0].type == "bind":
            return mounts
        opts = dict(o.split("=", 1) for o in mounts[0].options)
        nearest = opts["lowerdir"].split(":")[0]
        shutil.copytree(nearest, opts["upperdir"], symlinks=True, dirs_exist_ok=True)
        return [Mount("bind", opts["upperdir"], options=("rw", "rbind"))]


ME: dict[str, Any] = {}
L1 = layer(directory("etc", **ME), file("etc/a", b"a"), file("etc/b", b"b"),
           directory("opt/x", **ME), file("opt/x/old", b"o"))
L2 = layer(whiteout("etc/a"), file("etc/c", b"c"), directory("opt/x"), opaque("opt/x"),
           file("opt/x/new", b"n"))
L3 = layer(file("etc/b", b"b3"))


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "content")


@pytest.fixture
def sn(tmp_path: Path) -> CopyingSnapshotter:
    return CopyingSnapshotter(tmp_path / "snapshots")


def snapshot_dir(sn: OverlaySnapshotter, name: str) -> Path:
    """The directory of a committed snapshot (a full copy of the tree, here)."""
    (mount,) = sn.view(f"view-{name}", name)
    sn.remove(f"view-{name}")
    if mount.type == "bind":
        return Path(mount.source)
    return Path(mount.options[0].removeprefix("lowerdir=").split(":")[0])


def test_chain_ids_follow_the_image_spec() -> None:
    a, b, c = (sha256(x) for x in (b"1", b"2", b"3"))
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_id([a]) == a
    assert chain_id([a, b, c]) == abc
    with pytest.raises(InvalidArgument):
        chain_id([])


def test_unpack_three_layers_with_every_compression(store: FileStore,
                                                   sn: CopyingSnapshotter) -> None:
    manifest, config = image(store, [L1, L2, L3], ["gzip", "zstd", "none"])
    events = Collector()
    top = unpack_layers(manifest, config, store, sn, events)
    assert top == chain_id(config.diff_ids)
    infos: list[Any] = []
    sn.walk(infos.append)
    assert sorted(i.name for i in infos) == sorted(chain_ids(config.diff_ids))
    assert all(i.kind is Kind.COMMITTED for i in infos)
    assert sn.stat(top).parent == chain_ids(config.diff_ids)[1]
    root = snapshot_dir(sn, top)
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["b", "c"]
    assert (root / "etc/b").read_bytes() == b"b3"
    assert [p.name for p in (root / "opt/x").iterdir()] == ["new"]
    for desc in manifest.layers:
        statuses = events.statuses(desc.digest)
        assert statuses[0] is Status.EXTRACTING and statuses[-1] is Status.PULL_COMPLETE
        last_extract = [e for e in events.events
                        if e.digest == desc.digest and e.status is Status.EXTRACTING][-1]
        assert (last_extract.current, last_extract.total) == (desc.size, desc.size)


def test_existing_layers_are_not_applied_again(store: FileStore,
                                               sn: CopyingSnapshotter) -> None:
    manifest, config = image(store, [L1, L2])
    unpack_layers(manifest, config, store, sn, Collector())
    other_manifest, other_config = image(store, [L1, L2, L3])
    events = Collector()
    unpack_layers(other_manifest, other_config, store, sn, events)
    layers = other_manifest.layers
    assert events.statuses(layers[0].digest) == [Status.ALREADY_EXISTS]
    assert events.statuses(layers[1].digest) == [Status.ALREADY_EXISTS]
    assert events.statuses(layers[2].digest)[-1] is Status.PULL_COMPLETE


def test_a_diff_id_mismatch_commits_nothing(store: FileStore, sn: CopyingSnapshotter) -> None:
    manifest, config = image(store, [L1, L2], diff_ids=[sha256(L1), sha256(b"not L2")])
    with pytest.raises(FailedPrecondition, match="diff_id"):
        unpack_layers(manifest, config, store, sn, Collector())
    names: list[str] = []
    sn.walk(lambda i: names.append(i.name))
    assert names == [sha256(L1)]  # the good first layer stays; no active snapshot is left


def test_a_hostile_layer_commits_nothing(store: FileStore, sn: CopyingSnapshotter) -> None:
    manifest, config = image(store, [layer(file("../escape", b"x"))])
    with pytest.raises(InvalidArgument):
        unpack_layers(manifest, config, store, sn, Collector())
    names: list[str] = []
    sn.walk(lambda i: names.append(i.name))
    assert names == []


def test_layer_count_must_match_diff_ids(store: FileStore, sn: CopyingSnapshotter) -> None:
    manifest, config = image(store, [L1, L2], diff_ids=[sha256(L1)])
    with pytest.raises(InvalidArgument, match="diff_ids"):
        unpack_layers(manifest, config, store, sn, Collector())


def test_concurrent_unpacks_of_one_image(store: FileStore, sn: CopyingSnapshotter) -> None:
    manifest, config = image(store, [L1, L2, L3], ["gzip", "gzip", "gzip"])
    results: list[object] = []

    def go() -> None:
        try:
            results.append(unpack_layers(manifest, config, store, sn, Collector()))
        except Exception as err:  # collected, asserted below
            results.append(err)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    top = chain_id(config.diff_ids)
    assert results == [top] * 4
    infos: list[Any] = []
    sn.walk(infos.append)
    assert sorted(i.name for i in infos) == sorted(chain_ids(config.diff_ids))
    assert all(i.kind is Kind.COMMITTED for i in infos)
    assert (snapshot_dir(sn, top) / "etc/b").read_bytes() == b"b3"


class UnremovableSnapshotter(CopyingSnapshotter):
    """Removal fails (a tree that cannot be deleted): the unpack's own error must still show."""

    def remove(self, key: str) -> None:
        raise OSError(errno.EBUSY, "cannot remove")


def test_a_failed_cleanup_does_not_hide_the_unpack_error(
        store: FileStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sn = UnremovableSnapshotter(tmp_path / "unremovable")
    manifest, config = image(store, [L1], diff_ids=[sha256(b"not L1")])
    with caplog.at_level(logging.ERROR, logger="pydeskd.containerd.unpack"), \
            pytest.raises(FailedPrecondition, match="diff_id"):
        unpack_layers(manifest, config, store, sn, Collector())
    assert "could not remove snapshot extract-" in caplog.text
