"""The image cache: image.json, verification, atomic builds, the lock, the not-root message,
and the artifact manifest."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from pydesk.vm import image, imagebuild, imageregistry
from pydesk.vm.imagebase import ImageBuildError
from pydeskd import vmcontract
from pydeskd.containerd import oci


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYDESK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "vm-images"


def fake_image(directory: Path, image_key: str = "k" * 64) -> Path:
    directory.mkdir(parents=True)
    files = {}
    for name in image.IMAGE_FILES:
        (directory / name).write_bytes(name.encode() * 100)
        files[name] = hashlib.sha256(name.encode() * 100).hexdigest()
    info = {"contract": vmcontract.CONTRACT_VERSION, "arch": "amd64", "recipe_hash": "r",
            "base_key": "b", "image_key": image_key, "kernel_version": "6.1.0-50-cloud-amd64",
            "pydesk_version": "0.1.0", "files": files}
    (directory / vmcontract.IMAGE_INFO_FILE).write_text(json.dumps(info))
    return directory


def test_cache_root_follows_pydesk_cache(private_cache: Path) -> None:
    assert image.cache_root() == private_cache


def test_verify_checks_presence_then_digests(tmp_path: Path) -> None:
    d = fake_image(tmp_path / "img")
    assert image.verify_image(d, digests=True).kernel_version == "6.1.0-50-cloud-amd64"
    (d / vmcontract.ROOTFS_FILE).write_bytes(b"tampered")
    image.verify_image(d)  # presence only: cheap enough for every start
    with pytest.raises(ValueError, match=r"does not match image\.json"):
        image.verify_image(d, digests=True)
    (d / vmcontract.KERNEL_FILE).unlink()
    with pytest.raises(FileNotFoundError):
        image.verify_image(d)


def test_image_json_must_name_the_three_files_and_this_contract(tmp_path: Path) -> None:
    d = fake_image(tmp_path / "img")
    info = json.loads((d / vmcontract.IMAGE_INFO_FILE).read_text())
    info["contract"] = 99
    (d / vmcontract.IMAGE_INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="contract 99"):
        image.verify_image(d)
    del info["files"][vmcontract.INITRD_FILE]
    with pytest.raises(ValueError, match="must list the files"):
        image.ImageInfo.parse(json.dumps(info).encode())


def test_current_sources_have_no_image_until_one_is_in_place(private_cache: Path) -> None:
    assert image.image_dir_for_current_sources() is None
    keys = image.current_keys()
    fake_image(private_cache / "images" / keys.image_name, keys.image_key)
    assert image.image_dir_for_current_sources() == private_cache / "images" / keys.image_name


def test_build_into_is_all_or_nothing(private_cache: Path) -> None:
    final = private_cache / "images" / "x"

    def failing(tmp: Path) -> None:
        (tmp / "half").write_text("written")
        raise ImageBuildError("step failed")

    with pytest.raises(ImageBuildError):
        image.build_into(final, failing)
    assert not final.exists()
    assert list((private_cache / "tmp").iterdir()) == []
    image.build_into(final, lambda tmp: (tmp / "whole").write_text("ok"))
    assert (final / "whole").read_text() == "ok"
    assert list((private_cache / "tmp").iterdir()) == []


def test_the_lock_keeps_a_second_build_waiting() -> None:
    messages: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with image.build_lock(lambda _: None):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert inside.wait(10)
        with pytest.raises(ImageBuildError, match="another image build"), \
                image.build_lock(messages.append, timeout=0.6):
            pass
        assert messages == ["waiting for another image build to finish"]
    finally:
        release.set()
        t.join()
    with image.build_lock(messages.append, timeout=1):
        pass


def test_building_without_root_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(ImageBuildError, match=r"needs root.*sudo scripts/build-vm-image"):
        image.ensure_image()


def test_ensure_image_returns_a_cached_image_without_root(
        private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    keys = image.current_keys()
    fake_image(private_cache / "images" / keys.image_name, keys.image_key)
    assert image.ensure_image() == private_cache / "images" / keys.image_name


def test_guest_scripts_are_pydeskds_console_scripts_plus_init() -> None:
    scripts = imagebuild.guest_scripts()
    assert scripts["pydeskd"] == "pydeskd.daemon.main:main"
    assert scripts["pydesk-shim"] == "pydeskd.shim.main:main"
    assert scripts["pydesk-init"] == "pydeskd.guestinit.main:main"
    assert "pydesk" not in scripts  # the host CLI stays out of the guest
    text = imagebuild.script_text(scripts["pydeskd"])
    assert text.startswith("#!/opt/pydesk/bin/python3 -IS\n")
    assert "from pydeskd.daemon.main import main" in text


def _layer(name: str, data: bytes) -> oci.Descriptor:
    return oci.Descriptor(imageregistry.layer_media_type(name),
                          "sha256:" + hashlib.sha256(data).hexdigest(), len(data),
                          {imageregistry.TITLE: name})


def test_artifact_manifest_round_trip_and_refusals() -> None:
    config = oci.Descriptor(vmcontract.ARTIFACT_TYPE, "sha256:" + "a" * 64, 10)
    layers = [_layer(name, name.encode()) for name in imageregistry.LAYER_ORDER]
    data = imageregistry.build_manifest(config, layers)
    assert data == imageregistry.build_manifest(config, layers)
    obj = json.loads(data)
    assert obj["artifactType"] == vmcontract.ARTIFACT_TYPE
    assert obj["mediaType"] == oci.OCI_MANIFEST
    parsed_config, parsed = imageregistry.parse_artifact(data)
    assert parsed_config.digest == config.digest
    assert parsed[vmcontract.ROOTFS_FILE].media_type == \
        vmcontract.LAYER_MEDIA_TYPES[vmcontract.ROOTFS_FILE] + "+zstd"
    assert set(parsed) == set(vmcontract.LAYER_MEDIA_TYPES)
    with pytest.raises(ValueError, match="not a pydesk VM image"):
        imageregistry.parse_artifact(json.dumps(dict(obj, artifactType="x")).encode())
    with pytest.raises(ValueError, match="lacks"):
        imageregistry.parse_artifact(imageregistry.build_manifest(config, layers[:-1]))
    evil = oci.Descriptor(vmcontract.LAYER_MEDIA_TYPES[vmcontract.KERNEL_FILE],
                          "sha256:" + "b" * 64, 1, {imageregistry.TITLE: "../evil.sh"})
    renamed = [*layers[:-1], evil]
    with pytest.raises(ValueError, match="unexpected layer"):
        imageregistry.parse_artifact(imageregistry.build_manifest(config, renamed))


def test_prune_keeps_the_most_recently_used(private_cache: Path) -> None:
    import os
    made = []
    for i in range(5):
        d = fake_image(private_cache / "images" / f"amd64-{i}")
        os.utime(d, (1000 + i, 1000 + i))
        made.append(d)
    os.utime(made[0], (5000, 5000))  # used lately
    (private_cache / "base" / "amd64-old").mkdir(parents=True)
    (private_cache / "tmp" / "amd64-x.killed").mkdir(parents=True)
    removed = image.prune(keep_images=3, keep_bases=1)
    assert sorted(p.name for p in (private_cache / "images").iterdir()) == \
        ["amd64-0", "amd64-3", "amd64-4"]
    assert (private_cache / "base" / "amd64-old").exists()
    assert not (private_cache / "tmp" / "amd64-x.killed").exists()
    assert len(removed) == 3


def test_a_foreign_architecture_without_qemu_user_fails_before_debootstrap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydesk.vm import imagebase, imageforeign
    from pydesk.vm.imagebase import Runner, build_base
    from pydesk.vm.imagerecipe import host_arch, load_recipe
    other = "arm64" if host_arch() == "amd64" else "amd64"

    def no_debootstrap(*args: object) -> None:
        raise AssertionError("debootstrap ran")

    def no_qemu_user(arch: str, progress: object) -> object:
        raise imageforeign.ForeignArchError("qemu-aarch64-static is not installed")

    monkeypatch.setattr(imagebase, "debootstrap", no_debootstrap)
    monkeypatch.setattr(imagebase, "foreign_arch", no_qemu_user)
    with pytest.raises(ImageBuildError, match=f"cannot build the {other} image on a .*"
                                              "qemu-aarch64-static"):
        build_base(load_recipe(), other, tmp_path / "out", tmp_path / "debs", Runner(print))
    assert not (tmp_path / "out").exists()


def test_shadow_last_change_is_clamped_to_the_recipe_epoch(tmp_path: Path) -> None:
    from pydesk.vm.imagebase import clamp_times
    (tmp_path / "etc").mkdir()
    shadow = tmp_path / "etc/shadow"
    shadow.write_text("root:*:20787:0:99999:7:::\n_apt:*:100:0:99999:7:::\nbroken\n")
    clamp_times(tmp_path, 1747699200)
    assert shadow.read_text() == "root:*:20228:0:99999:7:::\n_apt:*:100:0:99999:7:::\nbroken\n"
