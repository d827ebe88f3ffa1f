"""The shared fixture images (tests/support/images.py) unpacked by pydesk onto real overlay
snapshots, compared with what umoci unpacks from the same OCI layout (paths, types, modes,
owners, contents, link targets, devices, user./trusted. xattrs, hardlink groups)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeskd.containerd.content import FileStore
from pydeskd.containerd.oci import ImageConfig, Index, Manifest, PlatformMatcher
from pydeskd.containerd.progress import Collector, Status
from pydeskd.containerd.snapshots import mount
from pydeskd.containerd.snapshots.overlay import OverlaySnapshotter
from pydeskd.containerd.unpack import unpack_layers
from tests.support.images import DEFAULT_PLATFORM, PREDEFINED, ImageLayout
from tests.support.rootfs_compare import diff_trees, tree_snapshot, umoci_unpack
from tests.unit.containerd.archive.layers import put_blob

# (fixture image, tag umoci can unpack: a manifest, not an index)
IMAGES = [("single", "latest"), ("multi", "latest"), ("zstd", "latest"),
          ("docker_v2", "latest"), ("multiplatform", "amd64"), ("docker_list", "amd64")]


def load_manifest(layout: ImageLayout, store: FileStore) -> tuple[Manifest, ImageConfig]:
    """Copy every blob of the layout into ``store``; the platform's manifest and config."""
    for blob in (layout.root / "blobs" / "sha256").iterdir():
        put_blob(store, blob.read_bytes())
    desc = layout.resolve("latest")
    data = layout.read_blob(desc.digest)
    if "manifests" in data.decode():
        desc = Index.parse(data).select(PlatformMatcher(DEFAULT_PLATFORM))
        data = layout.read_blob(desc.digest)
    manifest = Manifest.parse(data, desc.media_type)
    return manifest, ImageConfig.parse(layout.read_blob(manifest.config.digest))


@pytest.mark.parametrize(("name", "tag"), IMAGES, ids=[n for n, _ in IMAGES])
def test_unpack_matches_umoci(tmp_path: Path, name: str, tag: str) -> None:
    layout = ImageLayout(tmp_path / "layout")
    PREDEFINED[name](layout.root)
    store = FileStore(tmp_path / "content")
    sn = OverlaySnapshotter(tmp_path / "snapshots")
    manifest, config = load_manifest(layout, store)
    events = Collector()
    top = unpack_layers(manifest, config, store, sn, events)
    assert events.statuses(manifest.layers[-1].digest)[-1] is Status.PULL_COMPLETE
    reference = tree_snapshot(umoci_unpack(layout.root, tag, tmp_path / "umoci"),
                              hardlinks=True)
    with mount.mounted(sn.view("compare", top)) as root:
        ours = tree_snapshot(root, hardlinks=True)
    sn.remove("compare")
    assert diff_trees(ours, reference, ("pydesk", "umoci")) == []
