"""Pushing to Debian's docker-registry: monolithic, chunked, cross-repository mount, manifests;
skopeo sees the same manifest digest, and a pull back gives the same blobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore
from pydeskd.containerd.progress import Collector, Status
from pydeskd.containerd.registry import RegistryClient
from tests.integration.registry.common import make_client, pull, store_layout
from tests.support.image_fixtures import CREDENTIALS, BuiltLayout
from tests.support.images import ImageLayout
from tests.support.registry import Registry


def _push_image(client: RegistryClient, repo: str, layout: BuiltLayout, store: FileStore, *,
                mount_from: tuple[str, ...] = (), events: Collector | None = None) -> list[str]:
    image = ImageLayout(layout.path)
    manifest = oci.Manifest.parse(image.read_blob(layout.descriptor.digest))
    outcomes = [client.push_blob(repo, d, store, events or Collector(), mount_from=mount_from)
                for d in [*manifest.layers, manifest.config]]
    digest = client.push_manifest(repo, "latest", layout.descriptor.media_type,
                                  image.read_blob(layout.descriptor.digest))
    assert digest == layout.descriptor.digest
    return outcomes


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_push_then_skopeo_and_pull_back(fresh_registry: Registry,
                                        image_layouts: dict[str, BuiltLayout], tmp_path: Path,
                                        chunked: bool) -> None:
    layout = image_layouts["multi"]
    store = FileStore(tmp_path / "src")
    store_layout(layout.path, store)
    limits = {"chunk_size": 64 * 1024, "monolithic_limit": 64 * 1024} if chunked else {}
    client, backend = make_client(**limits)
    events = Collector()
    outcomes = _push_image(client, fresh_registry.ref("pushed/multi"), layout, store,
                           events=events)
    assert set(outcomes) == {"uploaded"}
    patches = [s for s in backend.sent if s.method == "PATCH"]
    if chunked:
        assert len(patches) > 3  # the busybox layer alone is several chunks
        assert all(s.headers["Content-Range"] for s in patches)
    else:
        assert patches == []
    assert fresh_registry.manifest_digest("pushed/multi:latest") == layout.descriptor.digest
    assert Status.PUSHED in {e.status for e in events.events}
    # Pushing again: every blob is already there.
    assert set(_push_image(client, fresh_registry.ref("pushed/multi"), layout, store)) == \
        {"exists"}
    # Pull back into a fresh store: the same blobs.
    back = FileStore(tmp_path / "back")
    desc = pull(client, fresh_registry.ref("pushed/multi:latest"), back)
    assert desc.digest == layout.descriptor.digest
    manifest = oci.Manifest.parse(client.fetch_manifest(fresh_registry.ref("pushed/multi"), desc))
    for d in [manifest.config, *manifest.layers]:
        with back.reader_at(d.digest) as a, store.reader_at(d.digest) as b:
            assert a.read_at(0, d.size) == b.read_at(0, d.size)


def test_cross_repository_mount(fresh_registry: Registry,
                                image_layouts: dict[str, BuiltLayout], tmp_path: Path) -> None:
    layout = image_layouts["single"]
    store = FileStore(tmp_path / "src")
    store_layout(layout.path, store)
    client, _ = make_client()
    _push_image(client, fresh_registry.ref("first/app"), layout, store)
    events = Collector()
    outcomes = _push_image(client, fresh_registry.ref("second/app"), layout, store,
                           mount_from=(fresh_registry.ref("first/app"),), events=events)
    assert set(outcomes) == {"mounted"}
    mounted = [e for e in events.events if e.status is Status.MOUNTED]
    assert {e.detail for e in mounted} == {fresh_registry.ref("first/app")}
    posts = [a for a in fresh_registry.access_log() if a.method == "POST" and "mount=" in a.path]
    assert posts and all(a.status == 201 for a in posts)
    assert fresh_registry.manifest_digest("second/app:latest") == layout.descriptor.digest


def test_push_with_token_auth_and_mount(token_registry: Registry,
                                        image_layouts: dict[str, BuiltLayout],
                                        tmp_path: Path) -> None:
    layout = image_layouts["single"]
    store = FileStore(tmp_path / "src")
    store_layout(layout.path, store)
    client, _ = make_client(CREDENTIALS)
    outcomes = _push_image(client, token_registry.ref("copy/single"), layout, store,
                           mount_from=(token_registry.ref("test/single"),))
    assert set(outcomes) == {"mounted"}
    assert token_registry.manifest_digest("copy/single:latest", CREDENTIALS) == \
        layout.descriptor.digest


def test_push_denied_without_credentials(htpasswd_registry: Registry,
                                         image_layouts: dict[str, BuiltLayout],
                                         tmp_path: Path) -> None:
    from pydeskd.containerd.errors import Unauthorized

    layout = image_layouts["single"]
    store = FileStore(tmp_path / "src")
    store_layout(layout.path, store)
    client, _ = make_client()
    with pytest.raises(Unauthorized, match="denied: requested access to the resource is denied"):
        _push_image(client, htpasswd_registry.ref("x/single"), layout, store)


def test_upload_status_matches_the_real_registry(fresh_registry: Registry,
                                                 tmp_path: Path) -> None:
    # The chunk-recovery path reads distribution's upload status ("Range: 0-<last byte>"):
    # check that reading against the real registry, after 0 and after 5000 bytes.
    import hashlib
    import os

    from pydeskd.containerd.registry import as_reference
    from pydeskd.containerd.registry.push import _location, _Upload

    data = os.urandom(5000)
    desc = oci.Descriptor(oci.OCI_LAYER, "sha256:" + hashlib.sha256(data).hexdigest(), 5000)
    store = FileStore(tmp_path / "src")
    with store.writer("x", 5000, desc.digest) as w:
        w.write(data)
        w.commit(5000, desc.digest)
    client, _ = make_client()
    upload = _Upload(client, as_reference(fresh_registry.ref("status/blob")), desc, store,
                     Collector())
    session = upload.start()
    session, offset = upload.upload_status(session)
    assert offset == 0
    with upload.request("PATCH", session, body=data,
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Range": "0-4999"}) as reply:
        assert reply.status == 202
        session = _location(reply)
    session, offset = upload.upload_status(session)
    assert offset == 5000
    upload.finish(session, b"")
    assert upload.exists()
