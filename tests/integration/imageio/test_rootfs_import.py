"""docker import: a busybox root filesystem tar (plain, gzip, zstd) becomes a one-layer image."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from pydeskd.containerd import oci
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.imageio import oci_layout
from pydeskd.containerd.imageio.rootfs_import import apply_changes, import_rootfs
from pydeskd.containerd.images import image_manifests
from tests.integration.imageio.helpers import Trickle, busybox_rootfs_tar, sha, stores

ROOTFS = busybox_rootfs_tar()


@pytest.mark.parametrize("compress", [
    lambda b: b, gzip.compress, lambda b: zstandard.ZstdCompressor().compress(b)],
    ids=["plain", "gzip", "zstd"])
def test_import_busybox(tmp_path: Path, compress: object) -> None:
    with stores(tmp_path) as s:
        data = compress(ROOTFS)  # type: ignore[operator]
        # Read a few bytes at a time, as from a socket: the format is still recognized.
        loaded = import_rootfs(Trickle(data, 65536, first=2),  # type: ignore[arg-type]
                               s.content, s.ctx, name="imported:v1",
                               changes=['CMD ["/bin/sh", "-c", "echo hi"]', "ENV A=1 B=two",
                                        "WORKDIR /root", "EXPOSE 8080 53/udp",
                                        "LABEL org.example=yes", "USER nobody",
                                        "ENTRYPOINT /bin/busybox"],
                               platform=oci.Platform("linux", "arm64"))
        assert loaded.name == "docker.io/library/imported:v1"
        image = s.images.resolve("imported:v1")
        assert image.id == loaded.id
        _, manifest, config = image_manifests(s.content, image.target)
        assert config.diff_ids == (sha(ROOTFS),)
        assert config.platform == oci.Platform("linux", "arm64")
        assert config.history[0]["comment"] == "Imported from -"
        assert config.config == {
            "Cmd": ["/bin/sh", "-c", "echo hi"], "Env": ["A=1", "B=two"],
            "WorkingDir": "/root", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "Labels": {"org.example": "yes"}, "User": "nobody",
            "Entrypoint": ["/bin/sh", "-c", "/bin/busybox"]}
        (layer,) = manifest.layers
        assert layer.media_type == oci.OCI_LAYER_GZIP
        assert s.content.info(layer.digest).labels == {"containerd.io/uncompressed":
                                                       sha(ROOTFS)}
        with s.content.reader_at(layer.digest) as r:
            blob = r.read_at(0, r.size)
        assert gzip.decompress(blob) == ROOTFS
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
            assert tar.getmember("bin/sh").linkname == "busybox"
        assert s.leases.list() == [] and s.ingests() == []


def test_unnamed_import_is_dangling_and_exports(tmp_path: Path) -> None:
    with stores(tmp_path) as s:
        loaded = import_rootfs(io.BytesIO(ROOTFS), s.content, s.ctx, message="from a test")
        assert loaded.name is None and loaded.message.startswith("Loaded image ID: sha256:")
        (image,) = s.images.list({"dangling": ["true"]})
        _, _, config = image_manifests(s.content, image.target)
        assert config.history[0]["comment"] == "from a test"
        # A real OCI tool unpacks our export of it (umoci finds the image by its ref.name).
        s.images.tag(image.id, "umoci:latest")
        named = tmp_path / "named"
        oci_layout.export_dir(named, s.content, [s.images.resolve("umoci:latest")])
        bundle = tmp_path / "bundle"
        subprocess.run(["umoci", "unpack", "--image", f"{named}:latest", str(bundle)],
                       check=True, capture_output=True)
        assert (bundle / "rootfs" / "bin" / "busybox").read_bytes() == \
            Path("/bin/busybox").resolve().read_bytes()
        assert (bundle / "rootfs" / "bin" / "sh").readlink() == Path("busybox")


def test_not_a_tar_commits_nothing(tmp_path: Path) -> None:
    with stores(tmp_path) as s:
        for data in (b"hello, not a tar" * 64, gzip.compress(b"x" * 4096), b"",
                     gzip.compress(ROOTFS)[:-20]):
            with pytest.raises(InvalidArgument):
                import_rootfs(io.BytesIO(data), s.content, s.ctx, name="bad")
        assert s.images.all() == [] and s.ingests() == [] and s.leases.list() == []
        blobs: list[str] = []
        s.content.walk(lambda i: blobs.append(i.digest))
        assert blobs == []


def test_changes() -> None:
    assert apply_changes({}, ["ENV PATH /usr/bin:/bin"]) == {"Env": ["PATH=/usr/bin:/bin"]}
    assert apply_changes({"Env": ["A=1"]}, ["ENV A=2"]) == {"Env": ["A=2"]}
    assert apply_changes({}, ['VOLUME ["/data", "/logs"]', "STOPSIGNAL SIGINT"]) == {
        "Volumes": {"/data": {}, "/logs": {}}, "StopSignal": "SIGINT"}
    for bad in ("RUN echo hi", "FROM busybox", "EXPOSE http", "ADD . /", "LABEL novalue"):
        with pytest.raises(InvalidArgument):
            apply_changes({}, [bad])
