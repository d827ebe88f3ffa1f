"""docker save / docker load and OCI layouts: round trips, older formats, interop with skopeo."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from pydeskd.containerd import oci
from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument, NotFound
from pydeskd.containerd.imageio import docker_archive, oci_layout
from pydeskd.containerd.images import content_size, image_manifests
from pydeskd.containerd.progress import Status
from tests.integration.imageio.helpers import Stores, Trickle, gz, layer_tar, sha, stores

BASE = layer_tar({"etc/os-release": b"ID=test\n", "bin/hello": b"#!/bin/sh\necho hi\n"})
TOP = layer_tar({"app/data": b"x" * 5000})


def members(tar_bytes: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for info in tar:
            f = tar.extractfile(info)
            out[info.name] = f.read() if f else b""
    return out


def save(s: Stores, names: list[str], platform: oci.Platform | None = None) -> bytes:
    out = io.BytesIO()
    docker_archive.save(out, s.content, [s.images.resolve(n) for n in names], platform)
    return out.getvalue()


def test_save_writes_docker_25_layout(tmp_path: Path) -> None:
    with stores(tmp_path) as s:
        target = s.image([BASE, TOP])
        s.images.put("busybox", target)
        s.images.tag("busybox", "me/app:v1")
        data = save(s, ["busybox", "me/app:v1"])
        files = members(data)
        assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
        index = json.loads(files["index.json"])
        assert [m["annotations"] for m in index["manifests"]] == [
            {"io.containerd.image.name": "docker.io/library/busybox:latest",
             "org.opencontainers.image.ref.name": "latest"},
            {"io.containerd.image.name": "docker.io/me/app:v1",
             "org.opencontainers.image.ref.name": "v1"}]
        manifest_json = json.loads(files["manifest.json"])
        manifest = oci.Manifest.parse(files["blobs/sha256/" + target.digest[7:]])
        assert manifest_json == [{
            "Config": "blobs/sha256/" + manifest.config.digest[7:],
            "RepoTags": ["busybox:latest", "me/app:v1"],
            "Layers": ["blobs/sha256/" + layer.digest[7:] for layer in manifest.layers]}]
        assert json.loads(files["repositories"]) == {
            "busybox": {"latest": manifest.layers[-1].digest[7:]},
            "me/app": {"v1": manifest.layers[-1].digest[7:]}}
        blob_files = {n for n in files if n.startswith("blobs/sha256/") and files[n]}
        assert blob_files == {f"blobs/sha256/{d[7:]}" for d in s.blobs()}


def test_round_trip_is_byte_identical(tmp_path: Path) -> None:
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        a.images.put("busybox", a.image([BASE, TOP]))
        a.images.put("other:1", a.image([BASE], tag="other"))
        a.images.put(None, a.image([TOP], tag="dangling"))
        dangling = a.images.list({"dangling": ["true"]})[0]
        saved = save(a, ["busybox", "other:1", dangling.id])
        loaded = docker_archive.load(io.BytesIO(saved), b.content, b.ctx)
        assert [i.message for i in loaded] == [
            "Loaded image: busybox:latest", "Loaded image: other:1",
            f"Loaded image ID: {dangling.id}"]
        assert b.blobs() == a.blobs()
        assert [(i.name, i.target) for i in b.images.all()] == \
            [(i.name, i.target) for i in a.images.all()]
        assert save(b, ["busybox", "other:1", dangling.id]) == saved
        # Every distinct layer (BASE and TOP) reported once, as Docker's "Loading layer".
        assert {e.status for e in b.events.events} == {Status.LOADING}
        assert len(b.events.events) == 2
        # The load's lease is gone and nothing was left in ingests.
        assert b.leases.list() == [] and b.ingests() == []


def test_compressed_save_stream_loads(tmp_path: Path) -> None:
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        a.images.put("busybox", a.image([BASE]))
        docker_archive.load(io.BytesIO(gz(save(a, ["busybox"]))), b.content, b.ctx)
        assert b.images.resolve("busybox").id == a.images.resolve("busybox").id
        b.images.remove("busybox")
        zst = zstandard.ZstdCompressor().compress(save(a, ["busybox"]))
        docker_archive.load(io.BytesIO(zst), b.content, b.ctx)
        assert b.images.resolve("busybox").id == a.images.resolve("busybox").id


def test_short_reads(tmp_path: Path) -> None:
    """A socket-like stream that returns a few bytes per read loads the same."""
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        a.images.put("busybox", a.image([BASE]))
        for data in (save(a, ["busybox"]), gz(save(a, ["busybox"])),
                     zstandard.ZstdCompressor().compress(save(a, ["busybox"]))):
            stream = Trickle(data)
            docker_archive.load(stream, b.content, b.ctx)  # type: ignore[arg-type]
            assert b.images.resolve("busybox").id == a.images.resolve("busybox").id
            b.images.remove("busybox")


def test_one_platform_of_an_index(tmp_path: Path) -> None:
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        amd = a.image([BASE], "amd64", tag="amd")
        arm = a.image([TOP], "arm64", tag="arm")
        a.images.put("multi", a.index([(amd, "amd64"), (arm, "arm64")]))
        saved = save(a, ["multi"], oci.Platform("linux", "arm64"))
        names = set(members(saved))
        assert f"blobs/sha256/{arm.digest[7:]}" in names
        assert f"blobs/sha256/{amd.digest[7:]}" not in names
        docker_archive.load(io.BytesIO(saved), b.content, b.ctx)
        image = b.images.resolve("multi")
        assert image.id == a.images.resolve("multi").id  # the index stays the target
        desc, _, config = image_manifests(b.content, image.target,
                                          oci.PlatformMatcher(oci.Platform("linux", "arm64")))
        assert desc.digest == arm.digest and config.config["Labels"] == {"tag": "arm"}
        with pytest.raises(NotFound):
            image_manifests(b.content, image.target,
                            oci.PlatformMatcher(oci.Platform("linux", "amd64")))
        # All platforms: both manifests, tags on one manifest.json entry only.
        both = members(save(a, ["multi"]))
        entries = json.loads(both["manifest.json"])
        assert len(entries) == 2 and sorted(len(e["RepoTags"]) for e in entries) == [0, 1]
        with pytest.raises(NotFound):
            save(a, ["multi"], oci.Platform("linux", "s390x"))
        # Content size counts what is present: b has the index and the arm64 image only.
        arm_size = sum(len(v) for k, v in b.blobs().items())
        assert content_size(b.content, image.target) == arm_size
        assert content_size(a.content, image.target) == sum(len(v) for v in a.blobs().values())


def test_save_refuses_a_corrupt_blob(tmp_path: Path) -> None:
    with stores(tmp_path) as s:
        target = s.image([BASE, TOP])
        s.images.put("busybox", target)
        layer = oci.Manifest.parse(s.blobs()[target.digest]).layers[1]
        path = s.content.root / "blobs" / "sha256" / layer.digest[7:]
        os.chmod(path, 0o644)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(FailedPrecondition, match="corrupt"):
            save(s, ["busybox"])


def legacy_archive(layers: list[bytes], config_extra: dict[str, object] | None = None,
                   diff_ids: list[str] | None = None) -> bytes:
    """The pre-25 ``docker save`` format: <id>/layer.tar, <id>.json, manifest.json,
    repositories; a layer shared by two images is a symlink, as Docker writes it."""
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(t) for t in layers]},
              **(config_extra or {})}
    config_bytes = json.dumps(config).encode()
    config_id = sha(config_bytes)[7:]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        paths = []
        for i, layer in enumerate(layers):
            layer_id = f"{i:064x}"
            info = tarfile.TarInfo(layer_id)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            add(f"{layer_id}/VERSION", b"1.0")
            add(f"{layer_id}/json", b"{}")
            add(f"{layer_id}/layer.tar", layer)
            paths.append(f"{layer_id}/layer.tar")
        # A second image whose layer.tar is a symlink to the first image's.
        alias = f"{'a' * 64}"
        info = tarfile.TarInfo(f"{alias}/layer.tar")
        info.type = tarfile.SYMTYPE
        info.linkname = f"../{paths[0]}"
        tar.addfile(info)
        add(f"{config_id}.json", config_bytes)
        add("manifest.json", json.dumps([
            {"Config": f"{config_id}.json", "RepoTags": ["legacy:1"], "Layers": paths},
            {"Config": f"{config_id}.json", "RepoTags": ["legacy:alias"],
             "Layers": [f"{alias}/layer.tar", *paths[1:]]}]).encode())
        add("repositories", json.dumps({"legacy": {"1": "0" * 64}}).encode())
    return buf.getvalue()


def test_load_pre_25_docker_archive(tmp_path: Path) -> None:
    with stores(tmp_path) as s:
        loaded = docker_archive.load(io.BytesIO(legacy_archive([BASE, TOP])), s.content, s.ctx)
        assert [i.message for i in loaded] == ["Loaded image: legacy:1",
                                               "Loaded image: legacy:alias"]
        image = s.images.resolve("legacy:1")
        assert s.images.resolve("legacy:alias").id == image.id
        _desc, manifest, config = image_manifests(s.content, image.target)
        assert [layer.media_type for layer in manifest.layers] == [oci.OCI_LAYER] * 2
        assert [layer.digest for layer in manifest.layers] == [sha(BASE), sha(TOP)]
        assert config.config["Cmd"] == ["sh"]


def test_load_manifest_json_with_gzip_layers(tmp_path: Path) -> None:
    """As go-containerregistry's tarball writes: manifest.json only, gzip layers."""
    config = oci.canonical_json({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": [sha(BASE)]}})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("layer.tar.gz", gz(BASE)), ("config.json", config),
                           ("manifest.json", json.dumps([{
                               "Config": "config.json", "RepoTags": ["ggcr:latest"],
                               "Layers": ["layer.tar.gz"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with stores(tmp_path) as s:
        docker_archive.load(io.BytesIO(buf.getvalue()), s.content, s.ctx)
        image = s.images.resolve("ggcr")
        _, manifest, _ = image_manifests(s.content, image.target)
        assert manifest.layers[0].media_type == oci.OCI_LAYER_GZIP
        assert s.content.info(manifest.layers[0].digest).labels == {
            "containerd.io/uncompressed": sha(BASE)}


def test_layout_directory_round_trip(tmp_path: Path) -> None:
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        a.images.put("busybox", a.image([BASE, TOP]))
        layout = tmp_path / "layout"
        oci_layout.export_dir(layout, a.content, [a.images.resolve("busybox")])
        assert not (layout / "manifest.json").exists()
        with pytest.raises(InvalidArgument, match="not empty"):
            oci_layout.export_dir(layout, a.content, [a.images.resolve("busybox")])
        loaded = oci_layout.import_dir(layout, b.content, b.ctx)
        assert [i.name for i in loaded] == ["docker.io/library/busybox:latest"]
        assert b.blobs() == a.blobs()
        out = io.BytesIO()
        oci_layout.export_tar(out, b.content, [b.images.resolve("busybox")])
        assert "manifest.json" not in members(out.getvalue())
        with stores(tmp_path / "c") as c:
            oci_layout.import_tar(io.BytesIO(out.getvalue()), c.content, c.ctx)
            assert c.blobs() == a.blobs()


def test_layout_directory_symlinked_blob_refused(tmp_path: Path) -> None:
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        target = a.image([BASE])
        a.images.put("busybox", target)
        layout = tmp_path / "layout"
        oci_layout.export_dir(layout, a.content, [a.images.resolve("busybox")])
        secret = tmp_path / "secret"
        secret.write_bytes(b"host file")
        blob = layout / "blobs" / "sha256" / target.digest[7:]
        blob.unlink()
        blob.symlink_to(secret)
        with pytest.raises(InvalidArgument):
            oci_layout.import_dir(layout, b.content, b.ctx)
        assert b.blobs() == {} and b.images.all() == [] and b.ingests() == []


def test_skopeo_reads_our_layout_and_we_read_its_archives(tmp_path: Path) -> None:
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        target = a.image([BASE, TOP])
        a.images.put("busybox", target)
        layout = tmp_path / "layout"
        oci_layout.export_dir(layout, a.content, [a.images.resolve("busybox")])
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:latest"],
                             check=True, capture_output=True).stdout
        assert sha(raw) == target.digest
        archive = tmp_path / "skopeo.tar"
        subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:latest",
                        f"docker-archive:{archive}:skopeo/copy:v1"],
                       check=True, capture_output=True)
        with archive.open("rb") as f:
            docker_archive.load(f, b.content, b.ctx)
        _, manifest, config = image_manifests(b.content, b.images.resolve("skopeo/copy:v1").target)
        assert list(config.diff_ids) == [sha(BASE), sha(TOP)]
        assert len(manifest.layers) == 2


def test_names_only_in_manifest_json_are_kept(tmp_path: Path) -> None:
    """A tool that names images in manifest.json only (index.json entries unnamed): the
    RepoTags name the index.json image that has that config."""
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        target = a.image([BASE])
        a.images.put(None, target)
        files = members(save(a, [target.digest]))
        entries = json.loads(files["manifest.json"])
        assert entries[0]["RepoTags"] == []
        entries[0]["RepoTags"] = ["named:v1"]
        files["manifest.json"] = json.dumps(entries).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        loaded = docker_archive.load(io.BytesIO(buf.getvalue()), b.content, b.ctx)
        assert [(i.name, i.id) for i in loaded] == [("docker.io/library/named:v1",
                                                     target.digest)]
        assert [i.name for i in b.images.all()] == ["docker.io/library/named:v1"]


def test_load_one_platform(tmp_path: Path) -> None:
    """docker load --platform: only that platform's blobs are committed; the index stays the
    target. An archive with nothing for the platform is refused, committing nothing."""
    with stores(tmp_path / "a") as a, stores(tmp_path / "b") as b:
        amd = a.image([BASE], "amd64", tag="amd")
        arm = a.image([TOP], "arm64", tag="arm")
        index = a.index([(amd, "amd64"), (arm, "arm64")])
        a.images.put("multi", index)
        a.images.put("armonly", a.image([TOP, BASE], "arm64"))
        saved = save(a, ["multi", "armonly"])
        loaded = docker_archive.load(io.BytesIO(saved), b.content, b.ctx,
                                     platform=oci.Platform("linux", "amd64"))
        assert [i.name for i in loaded] == ["docker.io/library/multi:latest"]
        assert amd.digest in b.blobs() and arm.digest not in b.blobs()
        assert b.images.resolve("multi").id == index.digest
        with stores(tmp_path / "c") as c:
            with pytest.raises(NotFound, match="s390x"):
                docker_archive.load(io.BytesIO(saved), c.content, c.ctx,
                                    platform=oci.Platform("linux", "s390x"))
            assert c.blobs() == {} and c.images.all() == [] and c.ingests() == []
            with pytest.raises(NotFound):
                docker_archive.load(io.BytesIO(legacy_archive([BASE])), c.content, c.ctx,
                                    platform=oci.Platform("linux", "arm64"))
            assert c.blobs() == {}
