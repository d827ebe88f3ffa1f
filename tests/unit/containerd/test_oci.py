"""OCI types: platform parsing and matching, descriptor/manifest/index/config validation."""

from __future__ import annotations

import json

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.errors import InvalidArgument

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D3 = "sha256:" + "c" * 64


@pytest.mark.parametrize(("text", "want"), [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("arm64", "linux/arm64"),
    ("linux/aarch64/v8", "linux/arm64"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/arm/6", "linux/arm/v6"),
    ("Linux/AMD64", "linux/amd64"),
])
def test_platform_parse_normalizes_like_containerd(text: str, want: str) -> None:
    assert str(oci.Platform.parse(text)) == want


@pytest.mark.parametrize("text", ["", "linux/", "/amd64", "a/b/c/d"])
def test_platform_parse_refuses_malformed(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid platform"):
        oci.Platform.parse(text)


@pytest.mark.parametrize(("wanted", "candidate", "rank"), [
    ("linux/amd64", "linux/amd64", 0),
    ("linux/amd64", "linux/arm64", None),
    ("linux/amd64", "windows/amd64", None),
    ("linux/arm64", "linux/arm64/v8", 0),
    ("linux/arm/v7", "linux/arm/v7", 0),
    ("linux/arm/v7", "linux/arm/v6", 1),
    ("linux/arm/v6", "linux/arm/v7", None),
    ("linux/amd64", "linux/386", 1),
    ("linux/arm64", "linux/arm/v7", 2),
    ("linux/arm64", "linux/arm/v5", 4),
    ("linux/386", "linux/amd64", None),
])
def test_platform_matcher_ranks_compatible_variants(
        wanted: str, candidate: str, rank: int | None) -> None:
    matcher = oci.PlatformMatcher(oci.Platform.parse(wanted))
    assert matcher.rank(oci.Platform.parse(candidate)) == rank


def _entry(digest: str, platform: str | None, **annotations: str) -> dict[str, object]:
    out: dict[str, object] = {"mediaType": oci.OCI_MANIFEST, "digest": digest, "size": 10}
    if platform:
        p = platform.split("/")
        out["platform"] = {"os": p[0], "architecture": p[1]}
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def test_index_select_skips_attestations_and_picks_the_platform() -> None:
    index = oci.Index.parse(json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
        "manifests": [
            _entry(D3, "unknown/unknown",
                   **{oci.ANNOTATION_REFERENCE_TYPE: oci.ATTESTATION_MANIFEST}),
            _entry(D1, "linux/amd64"), _entry(D2, "linux/arm64")]}).encode())
    amd = index.select(oci.PlatformMatcher(oci.Platform.parse("linux/amd64")))
    arm = index.select(oci.PlatformMatcher(oci.Platform.parse("linux/arm64/v8")))
    assert (amd.digest, arm.digest) == (D1, D2)
    with pytest.raises(InvalidArgument, match=r"no matching manifest for linux/s390x.*linux/amd64"):
        index.select(oci.PlatformMatcher(oci.Platform.parse("linux/s390x")))


def test_manifest_round_trips_and_validates() -> None:
    doc = {"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
           "config": {"mediaType": oci.DOCKER_CONFIG, "digest": D1, "size": 5},
           "layers": [{"mediaType": oci.DOCKER_LAYER_GZIP, "digest": D2, "size": 7}]}
    manifest = oci.Manifest.parse(json.dumps(doc).encode())
    assert manifest.to_json() == doc
    assert oci.Compression.of(manifest.layers[0].media_type) == oci.Compression.GZIP
    assert oci.Compression.of(oci.OCI_LAYER_ZSTD) == oci.Compression.ZSTD
    assert oci.Compression.of(oci.OCI_LAYER) == oci.Compression.NONE


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["config"].update(digest="sha256:../../etc"), "invalid manifest config"),
    (lambda d: d["layers"][0].update(size=-1), "size must be a non-negative"),
    (lambda d: d["layers"][0].update(size=True), "size must be a non-negative"),
    (lambda d: d.update(layers={}), "layers must be a list"),
    (lambda d: d.update(schemaVersion=1), "schema 1"),
    (lambda d: d.update(mediaType=oci.OCI_INDEX), "unexpected media type"),
])
def test_manifest_refuses_bad_documents(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
           "config": {"mediaType": oci.OCI_CONFIG, "digest": D1, "size": 5},
           "layers": [{"mediaType": oci.OCI_LAYER_GZIP, "digest": D2, "size": 7}]}
    mutate(doc)
    with pytest.raises(InvalidArgument, match=message):
        oci.Manifest.parse(json.dumps(doc).encode())


def test_sniff_and_not_json() -> None:
    assert oci.sniff_media_type(b'{"manifests": []}') == oci.OCI_INDEX
    assert oci.sniff_media_type(b'{"config": {}, "layers": []}') == oci.OCI_MANIFEST
    with pytest.raises(InvalidArgument, match="not JSON"):
        oci.sniff_media_type(b"\xff")


def test_image_config_parse() -> None:
    cfg = oci.ImageConfig.parse(json.dumps({
        "architecture": "arm64", "variant": "v8", "os": "linux",
        "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        "history": [{"created_by": "x"}, "junk"]}).encode())
    assert str(cfg.platform) == "linux/arm64"
    assert cfg.diff_ids == (D1, D2) and cfg.config == {"Cmd": ["sh"]}
    assert len(cfg.history) == 1
    with pytest.raises(InvalidArgument, match="diff_id"):
        oci.ImageConfig.parse(b'{"rootfs": {"type": "layers", "diff_ids": ["md5:x"]}}')


def test_index_select_falls_back_like_containerd() -> None:
    index = oci.Index.parse(json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
        "manifests": [_entry(D1, "linux/386"), _entry(D2, "linux/arm/v7")]}).encode())
    assert index.select(oci.PlatformMatcher(oci.Platform.parse("linux/amd64"))).digest == D1
    assert index.select(oci.PlatformMatcher(oci.Platform.parse("linux/arm64"))).digest == D2


def test_bad_arm_variant_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="invalid platform variant"):
        oci.PlatformMatcher(oci.Platform.parse("linux/arm/vx"))
