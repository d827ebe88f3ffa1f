"""The shared fixture images (tests/support/images.py: whiteouts, zstd, Docker v2, indexes with
attestations) through import -> save -> load, and through skopeo's docker-archive."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.imageio import docker_archive, oci_layout
from pydeskd.containerd.images import image_manifests
from tests.integration.imageio.helpers import stores
from tests.support.images import PREDEFINED


@pytest.mark.parametrize("name", sorted(PREDEFINED))
def test_fixture_round_trip(tmp_path: Path, name: str) -> None:
    layout = tmp_path / "layout"
    desc = PREDEFINED[name](layout)
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        loaded = oci_layout.import_dir(layout, a.content, a.ctx)
        # The fixture's index.json names its entries with bare tags ("latest", "amd64"...):
        # each is loaded unnamed (dangling), as Docker does.
        assert desc.digest in [i.id for i in loaded]
        assert {i.name for i in loaded} == {None}
        a.images.tag(desc.digest, f"fixture/{name}:latest")
        image = a.images.resolve(f"fixture/{name}")
        _, manifest, config = image_manifests(
            a.content, image.target, oci.PlatformMatcher(oci.Platform("linux", "amd64")))
        assert len(manifest.layers) == len(config.diff_ids)
        out = io.BytesIO()
        docker_archive.save(out, a.content, [image])
        docker_archive.load(io.BytesIO(out.getvalue()), b.content, b.ctx)
        assert b.images.resolve(f"fixture/{name}").id == desc.digest
        again = io.BytesIO()
        docker_archive.save(again, b.content, [b.images.resolve(f"fixture/{name}")])
        assert again.getvalue() == out.getvalue()


def test_skopeo_docker_archive_of_a_fixture(tmp_path: Path) -> None:
    """skopeo writes the pre-25 docker-archive format (uncompressed layers, manifest.json)."""
    layout = tmp_path / "layout"
    PREDEFINED["multi"](layout)
    archive = tmp_path / "multi.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:latest",
                    f"docker-archive:{archive}:fixture/multi:v1"],
                   check=True, capture_output=True)
    with stores(tmp_path / "s") as s, archive.open("rb") as f:
        loaded = docker_archive.load(f, s.content, s.ctx)
        assert [i.message for i in loaded] == ["Loaded image: fixture/multi:v1"]
        _, manifest, config = image_manifests(s.content, s.images.resolve("fixture/multi:v1")
                                              .target)
        assert [layer.media_type for layer in manifest.layers] == \
            [oci.OCI_LAYER] * len(config.diff_ids)
        assert [layer.digest for layer in manifest.layers] == list(config.diff_ids)
