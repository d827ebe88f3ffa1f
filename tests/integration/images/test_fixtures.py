"""The image fixtures prove themselves: layouts are valid OCI (umoci unpacks them and applies
their whiteouts as documented), digests are stable, the registry serves exactly the layout's
manifests, auth modes refuse and accept as they should, and stop/start keeps the content."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pydeskd.containerd.oci import (
    ANNOTATION_REFERENCE_TYPE,
    ATTESTATION_MANIFEST,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_ZSTD,
    Index,
    Manifest,
)
from tests.support import images
from tests.support.image_fixtures import CREDENTIALS, BuiltLayout, build_layouts
from tests.support.registry import Registry, ToolError
from tests.support.rootfs_compare import (
    diff_trees,
    reference_rootfs,
    tree_snapshot,
    umoci_unpack,
)
from tests.support.token_server import TokenServer

BUSYBOX_SHA = images.sha256(images.BUSYBOX.read_bytes())[7:]


def _manifest(layout: BuiltLayout, tag: str = "latest") -> Manifest:
    lay = images.ImageLayout(layout.path)
    return Manifest.parse(lay.read_blob(lay.resolve(tag).digest))


@pytest.mark.parametrize(("name", "tag", "marker"), [
    ("single", "latest", None),
    ("multi", "latest", ("etc/motd", "pydesk multi\n")),
    ("zstd", "latest", ("etc/zstd-image", "zstd\n")),
    ("docker_v2", "latest", ("etc/docker-v2", "docker\n")),
    ("multiplatform", "amd64", ("etc/platform", "linux/amd64\n")),
    ("multiplatform", "arm64", ("etc/platform", "linux/arm64/v8\n")),
    ("docker_list", "amd64", ("etc/platform", "linux/amd64\n")),
    ("docker_list", "arm64", ("etc/platform", "linux/arm64/v8\n")),
])
def test_umoci_unpacks_each_layout(image_layouts: dict[str, BuiltLayout], tmp_path: Path,
                                   name: str, tag: str, marker: tuple[str, str] | None) -> None:
    rootfs = umoci_unpack(image_layouts[name].path, tag, tmp_path / "bundle")
    tree = tree_snapshot(rootfs, hardlinks=True)
    assert tree["bin/busybox"].sha256 == BUSYBOX_SHA
    assert tree["bin/busybox"].mode == 0o755
    assert tree["bin/sh"].hardlinks == tree["bin/busybox"].hardlinks
    assert tree["bin/sh"].hardlinks is not None and "bin/ls" in tree["bin/sh"].hardlinks
    assert tree["bin/cat"].link_target == "busybox"
    assert tree["tmp"].mode == 0o1777 and tree["root"].mode == 0o700
    if marker is not None:
        assert (rootfs / marker[0]).read_text() == marker[1]


def test_multi_layers_whiteouts_and_features_in_umoci_rootfs(
        image_layouts: dict[str, BuiltLayout], tmp_path: Path) -> None:
    rootfs = umoci_unpack(image_layouts["multi"].path, "latest", tmp_path / "bundle")
    tree = tree_snapshot(rootfs, mtime=True, hardlinks=True)
    # whiteouts, the opaque directory, type changes
    assert "bin/wget" not in tree and "bin/cat" in tree
    assert "etc/doomed-file" not in tree
    assert tree["etc/doomed-dir"].kind == "file" and not any(
        p.startswith("etc/doomed-dir/") for p in tree)
    assert (rootfs / "etc/doomed-dir").read_text() == "reborn as a file\n"
    assert sorted(p for p in tree if p.startswith("etc/opaque-dir/")) == ["etc/opaque-dir/new"]
    assert tree["opt/app/replaced-by-dir"].kind == "dir"
    assert "opt/app/replaced-by-dir/inside" in tree
    assert tree["opt/app/symlink-replaced-by-file"].kind == "file"
    assert not any(".wh." in p for p in tree)
    # modes, owners, times, links, devices, xattrs
    secret = tree["opt/app/secret"]
    assert (secret.mode, secret.uid, secret.gid) == (0o640, 1000, 1000)
    assert (rootfs / "opt/app/secret").read_text() == "rotated\n"
    assert tree["opt/app"].mode == 0o750 and tree["opt/app"].uid == 1000
    assert tree["opt/app/setuid"].mode == 0o4755
    assert (tree["opt/app/setgid"].mode, tree["opt/app/setgid"].gid) == (0o2755, 5)
    assert tree["opt/app/sticky"].mode == 0o1777
    assert tree["opt/app/old"].mtime == 1_000_000_000
    assert tree["opt/app/run.sh"].mtime == images.FIXED_MTIME
    assert tree["opt/app/run.sh"].hardlinks == ("opt/app/run-hardlink.sh", "opt/app/run.sh")
    assert tree["opt/app/link-absolute"].link_target == "/etc/passwd"
    assert tree["opt/app/link-dangling"].link_target == "/nonexistent/target"
    assert (tree["opt/app/null"].kind, tree["opt/app/null"].rdev) == ("char", (1, 3))
    assert (tree["opt/app/loop0"].kind, tree["opt/app/loop0"].rdev) == ("block", (7, 0))
    assert tree["opt/app/fifo"].kind == "fifo"
    assert dict(tree["opt/app/xattrs"].xattrs) == {"user.pydesk.test": b"hello",
                                                   "trusted.pydesk.test": b"trusted"}
    assert "opt/app/naïve name with spaces.txt" in tree
    assert images._LONG_FILE in tree
    assert tree["var/lib/app"].mode == 0o700


def test_media_types_of_the_predefined_images(image_layouts: dict[str, BuiltLayout]) -> None:
    assert len(_manifest(image_layouts["multi"]).layers) == 4
    zstd = _manifest(image_layouts["zstd"])
    assert [layer.media_type for layer in zstd.layers] == [OCI_LAYER_ZSTD, OCI_LAYER]
    docker = _manifest(image_layouts["docker_v2"])
    assert docker.media_type == DOCKER_MANIFEST
    assert {layer.media_type for layer in docker.layers} == {DOCKER_LAYER_GZIP}
    mp = image_layouts["multiplatform"]
    assert mp.descriptor.media_type == OCI_INDEX
    index = Index.parse(images.ImageLayout(mp.path).read_blob(mp.descriptor.digest))
    raw = json.loads(images.ImageLayout(mp.path).read_blob(mp.descriptor.digest))
    assert [m["platform"] for m in raw["manifests"]] == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
        {"os": "unknown", "architecture": "unknown"}]
    assert index.manifests[2].annotations[ANNOTATION_REFERENCE_TYPE] == ATTESTATION_MANIFEST
    assert index.manifests[2].annotations[images.ANNOTATION_REFERENCE_DIGEST] == \
        index.manifests[0].digest
    amd64, arm64 = (Manifest.parse(images.ImageLayout(mp.path).read_blob(m.digest))
                    for m in index.manifests[:2])
    assert amd64.layers[0] == arm64.layers[0]  # one shared base blob
    assert amd64.layers[1] != arm64.layers[1]
    dl = image_layouts["docker_list"]
    assert dl.descriptor.media_type == DOCKER_MANIFEST_LIST
    docker_list = Index.parse(images.ImageLayout(dl.path).read_blob(dl.descriptor.digest))
    assert {m.media_type for m in docker_list.manifests} == {DOCKER_MANIFEST}


def test_digests_are_stable_across_builds(tmp_path: Path,
                                          image_layouts: dict[str, BuiltLayout]) -> None:
    again = build_layouts(tmp_path / "again")
    assert {n: b.descriptor for n, b in again.items()} == \
        {n: b.descriptor for n, b in image_layouts.items()}
    for name, built in again.items():
        first = sorted(p.name for p in (image_layouts[name].path / "blobs/sha256").iterdir())
        assert sorted(p.name for p in (built.path / "blobs/sha256").iterdir()) == first


def test_layers_are_written_verbatim_for_hostile_tests() -> None:
    layer = images.build_layer([images.file("../escape", "x"), images.file("/abs", "y"),
                                images.symlink("evil", "/etc"), images.file("evil/passwd", "z"),
                                images.hardlink("hard", "/etc/shadow")], "none")
    with tarfile.open(fileobj=io.BytesIO(layer.blob)) as tar:
        assert [(m.name, m.linkname) for m in tar.getmembers()] == [
            ("../escape", ""), ("/abs", ""), ("evil", "/etc"), ("evil/passwd", ""),
            ("hard", "/etc/shadow")]
    assert layer.digest == layer.diff_id


def test_big_image(tmp_path: Path) -> None:
    desc = images.build_big(tmp_path / "big", n_layers=3, total_mb=3, seed=1)
    layout = images.ImageLayout(tmp_path / "big")
    manifest = Manifest.parse(layout.read_blob(desc.digest))
    assert len(manifest.layers) == 3
    assert all(layer.size > 1 << 20 for layer in manifest.layers)  # incompressible
    assert images.build_big(tmp_path / "big2", n_layers=3, total_mb=3, seed=1) == desc


def test_registry_serves_the_layout_digests(registry: Registry,
                                            image_layouts: dict[str, BuiltLayout]) -> None:
    for name, built in image_layouts.items():
        assert registry.manifest_digest(f"test/{name}:latest") == built.descriptor.digest
        assert registry.pushed[f"test/{name}:latest"].digest == built.descriptor.digest
    mp = image_layouts["multiplatform"]
    index = Index.parse(images.ImageLayout(mp.path).read_blob(mp.descriptor.digest))
    for entry in index.manifests:  # every child, attestation included, is there by digest
        assert registry.manifest_digest(f"test/multiplatform@{entry.digest}") == entry.digest


def test_reference_rootfs_from_the_registry_matches_the_layout(
        registry: Registry, image_layouts: dict[str, BuiltLayout], tmp_path: Path) -> None:
    for name in ("multi", "zstd", "docker_v2"):
        from_registry = reference_rootfs(registry.ref(f"test/{name}:latest"), tmp_path / name)
        from_layout = umoci_unpack(image_layouts[name].path, "latest", tmp_path / f"{name}-l")
        assert diff_trees(tree_snapshot(from_registry), tree_snapshot(from_layout)) == []
    for name in ("multiplatform", "docker_list"):
        arm = reference_rootfs(registry.ref(f"test/{name}:latest"), tmp_path / f"{name}-arm",
                               platform=("linux", "arm64", "v8"))
        assert (arm / "etc/platform").read_text() == "linux/arm64/v8\n"


def test_diff_trees_reports_each_difference(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "d").mkdir(parents=True)
        (root / "d/f").write_text("same")
        (root / "l").symlink_to("d/f")
    (b / "d/f").write_text("other")
    (b / "d/f").chmod(0o4755)
    (b / "l").unlink()
    (b / "l").symlink_to("elsewhere")
    (b / "new").write_text("")
    diff = diff_trees(tree_snapshot(a), tree_snapshot(b))
    assert "new: only in b (file)" in diff
    assert "l: link_target a='d/f' b='elsewhere'" in diff
    assert "d/f: mode a=0o644 b=0o4755" in diff
    assert any(line.startswith("d/f: sha256") for line in diff)
    assert diff_trees(tree_snapshot(a), tree_snapshot(a)) == []


def test_htpasswd_registry_refuses_anonymous_and_wrong_password(
        htpasswd_registry: Registry, image_layouts: dict[str, BuiltLayout]) -> None:
    assert htpasswd_registry.credentials == CREDENTIALS
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(f"{htpasswd_registry.url}/v2/")
    assert raw.value.code == 401 and "Basic" in raw.value.headers["WWW-Authenticate"]
    with pytest.raises(ToolError, match="authentication required"):
        htpasswd_registry.manifest_digest("test/single:latest")
    with pytest.raises(ToolError, match=r"(?i)unauthorized"):
        htpasswd_registry.manifest_digest("test/single:latest", (CREDENTIALS[0], "wrong"))
    assert htpasswd_registry.manifest_digest("test/multi:latest", CREDENTIALS) == \
        image_layouts["multi"].descriptor.digest


def test_token_registry_flow(token_registry: Registry,
                             image_layouts: dict[str, BuiltLayout]) -> None:
    ts = token_registry.token_server
    assert ts is not None and ts.token_requests == 0
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(f"{token_registry.url}/v2/")
    challenge = raw.value.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and ts.realm in challenge

    assert token_registry.manifest_digest("test/single:latest", CREDENTIALS) == \
        image_layouts["single"].descriptor.digest
    asked = ts.requests[-1]
    assert (asked.account, asked.status) == (CREDENTIALS[0], 200)
    assert asked.scopes == ("repository:test/single:pull",) == asked.granted

    with pytest.raises(ToolError, match="incorrect username or password"):
        token_registry.manifest_digest("test/single:latest", (CREDENTIALS[0], "wrong"))
    assert ts.requests[-1].status == 401
    with pytest.raises(ToolError, match=r"(?i)denied|unauthorized"):
        token_registry.manifest_digest("test/single:latest")
    assert ts.requests[-1].account is None and ts.requests[-1].granted == ()
    ts.allow_anonymous_pull = True
    assert token_registry.manifest_digest("test/single:latest") == \
        image_layouts["single"].descriptor.digest
    allowed = ts.requests[-1]
    assert allowed.granted == ("repository:test/single:pull",)


def test_token_server_oauth_post_and_refresh(tmp_path: Path) -> None:
    with TokenServer(tmp_path, {"u": "p"}) as ts:
        def post(form: str) -> dict[str, object]:
            request = urllib.request.Request(ts.realm, data=form.encode(), method="POST")
            with urllib.request.urlopen(request) as response:
                body: dict[str, object] = json.loads(response.read())
                return body
        first = post("grant_type=password&username=u&password=p&service=s&access_type=offline"
                     "&scope=repository:a/b:pull,push")
        claims = json.loads(base64.urlsafe_b64decode(str(first["access_token"]).split(".")[1]
                                                     + "=="))
        assert claims["access"] == [{"type": "repository", "name": "a/b",
                                     "actions": ["pull", "push"]}]
        assert claims["iss"] == ts.issuer and claims["aud"] == ts.service
        again = post(f"grant_type=refresh_token&refresh_token={first['refresh_token']}"
                     "&service=s&scope=repository:a/b:pull")
        assert again["access_token"]
        with pytest.raises(urllib.error.HTTPError) as bad:
            post("grant_type=password&username=u&password=no&service=s")
        assert bad.value.code == 401
        assert [r.status for r in ts.requests] == [200, 200, 401]


def test_stop_start_keeps_port_and_content(fresh_registry: Registry,
                                           image_layouts: dict[str, BuiltLayout]) -> None:
    pushed = fresh_registry.push_layout(image_layouts["single"].path, "keep/single:v1")
    port = fresh_registry.port
    fresh_registry.stop(kill=True)
    assert not fresh_registry.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{fresh_registry.url}/v2/", timeout=2)
    fresh_registry.start()
    assert fresh_registry.port == port
    assert fresh_registry.manifest_digest("keep/single:v1") == pushed.digest


def test_access_log_counts_requests(fresh_registry: Registry,
                                    image_layouts: dict[str, BuiltLayout]) -> None:
    built = image_layouts["single"]
    fresh_registry.push_layout(built.path, "count/single:latest")
    before = len(fresh_registry.access_log())
    fresh_registry.raw_manifest("count/single:latest")
    new = fresh_registry.access_log()[before:]
    assert ("GET", "/v2/count/single/manifests/latest", 200) in {
        (a.method, a.path, a.status) for a in new}
    assert not any("/blobs/" in a.path for a in new)


def test_registry_dies_with_a_killed_test_process(tmp_path: Path) -> None:
    script = ("import sys, pathlib, time; from tests.support.registry import Registry\n"
              "r = Registry(pathlib.Path(sys.argv[1])).start()\n"
              "print(r._process.pid, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "r")],
                              stdout=subprocess.PIPE, cwd=Path(__file__).parents[3])
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert Path(f"/proc/{pid}").exists()
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "docker-registry outlived its test process"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_registry_process_is_gone_after_the_context(tmp_path: Path) -> None:
    with Registry(tmp_path / "r") as reg:
        process = reg._process
        assert process is not None and process.poll() is None
    assert process.poll() is not None
    shutil.rmtree(tmp_path / "r")
