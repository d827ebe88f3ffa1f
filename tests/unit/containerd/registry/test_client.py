"""The client against an in-memory registry: resolve, manifests, blob download (resume, verify,
dedup, progress), mirrors, push (exists, mount, monolithic, chunked)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore
from pydeskd.containerd.errors import FailedPrecondition, NotFound, Unavailable
from pydeskd.containerd.progress import Collector, Status
from pydeskd.containerd.registry import RegistryClient, RegistryHosts
from pydeskd.containerd.registry.transport import ConnectionFailed, Transport
from tests.unit.containerd.registry.fakes import FakeBackend, FakeRegistry, Request, sha

MANIFEST = oci.OCI_MANIFEST


def make(registry: object, **kw: object) -> tuple[RegistryClient, FakeBackend]:
    backend = FakeBackend(registry)  # type: ignore[arg-type]
    hosts = kw.pop("hosts", RegistryHosts(insecure=("reg.test",)))
    client = RegistryClient(hosts, transport=Transport(backend, sleep=lambda s: None),  # type: ignore[arg-type]
                            sleep=lambda s: None, **kw)  # type: ignore[arg-type]
    return client, backend


def blob_desc(data: bytes) -> oci.Descriptor:
    return oci.Descriptor(oci.OCI_LAYER_GZIP, sha(data), len(data))


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "content")


def _manifest(registry: FakeRegistry, repo: str = "app", tag: str = "v1") -> tuple[str, bytes]:
    data = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                       "config": {"mediaType": oci.OCI_CONFIG, "digest": sha(b"{}"), "size": 2},
                       "layers": []}).encode()
    return registry.put_manifest(repo, tag, MANIFEST, data), data


# --- resolve and manifests --------------------------------------------------------------------


def test_resolve_by_tag_with_head(registry: FakeRegistry) -> None:
    digest, data = _manifest(registry)
    client, backend = make(registry)
    assert client.resolve("reg.test/app:v1") == oci.Descriptor(MANIFEST, digest, len(data))
    [head] = backend.requests
    assert head.method == "HEAD"
    assert head.url == "http://reg.test/v2/app/manifests/v1"
    assert head.header("Accept") == ", ".join(oci.MANIFEST_ACCEPT)


def test_resolve_falls_back_to_get_without_digest_header(registry: FakeRegistry) -> None:
    digest, data = _manifest(registry)
    registry.head_digest = False
    client, backend = make(registry)
    assert client.resolve("reg.test/app:v1") == oci.Descriptor(MANIFEST, digest, len(data))
    assert [r.method for r in backend.requests] == ["HEAD", "GET"]


def test_resolve_by_digest(registry: FakeRegistry) -> None:
    digest, _data = _manifest(registry)
    registry.head_digest = False
    client, backend = make(registry)
    desc = client.resolve(f"reg.test/app@{digest}")
    assert desc.digest == digest
    assert backend.requests[0].url.endswith(f"/manifests/{digest}")


def test_resolve_unknown_tag(registry: FakeRegistry) -> None:
    client, _ = make(registry)
    with pytest.raises(NotFound) as e:
        client.resolve("reg.test/app:nope")
    assert str(e.value) == "manifest for reg.test/app:nope not found: manifest unknown"


def test_fetch_manifest_verifies_digest_and_size(registry: FakeRegistry) -> None:
    digest, data = _manifest(registry)
    client, _ = make(registry)
    desc = oci.Descriptor(MANIFEST, digest, len(data))
    assert client.fetch_manifest("reg.test/app", desc) == data
    assert client.fetch_manifest("reg.test/app:v1") == data
    # The registry serves other bytes under this digest (a lying or broken registry).
    registry.manifests[("app", digest)] = (MANIFEST, data + b" ")
    registry.head_digest = False
    with pytest.raises(FailedPrecondition, match="received content has digest"):
        client.fetch_manifest("reg.test/app", desc)


def test_fetch_manifest_checks_the_registry_digest_header(registry: FakeRegistry) -> None:
    _, data = _manifest(registry)
    registry.manifests[("app", "v1")] = (MANIFEST, data + b"\n")  # header digest of new bytes...
    client, backend = make(registry)

    def lying(req: Request) -> object:
        answer = registry(req)
        answer._headers["Docker-Content-Digest"] = sha(data)  # type: ignore[union-attr]
        return answer

    backend.handler = lying  # type: ignore[assignment]
    with pytest.raises(FailedPrecondition, match="Docker-Content-Digest"):
        client.fetch_manifest("reg.test/app:v1")


# --- blobs ------------------------------------------------------------------------------------


def test_fetch_blob_into_store_with_progress(registry: FakeRegistry, store: FileStore) -> None:
    data = os.urandom(300_000)
    registry.put_blob("app", data)
    client, _ = make(registry)
    events = Collector()
    desc = blob_desc(data)
    assert client.fetch_blob_into("reg.test/app", desc, store, events) is True
    with store.reader_at(desc.digest) as r:
        assert r.read_at(0, len(data)) == data
    statuses = events.statuses(desc.digest)
    assert statuses[0] is Status.DOWNLOADING
    assert statuses[-2:] == [Status.VERIFYING, Status.DOWNLOAD_COMPLETE]
    last_download = [e for e in events.events if e.status is Status.DOWNLOADING][-1]
    assert (last_download.current, last_download.total) == (len(data), len(data))
    assert store.list_statuses() == []
    # Again: already there, nothing downloaded.
    again = Collector()
    assert client.fetch_blob_into("reg.test/app", desc, store, again) is False
    assert again.statuses(desc.digest) == [Status.ALREADY_EXISTS]


def test_resume_from_a_partial_ingest_with_range(registry: FakeRegistry,
                                                 store: FileStore) -> None:
    data = os.urandom(100_000)
    registry.put_blob("app", data)
    desc = blob_desc(data)
    with store.writer(f"pull-{desc.digest}", desc.size, desc.digest) as w:
        w.write(data[:40_000])  # left by an earlier, interrupted pull
    client, backend = make(registry)
    client.fetch_blob_into("reg.test/app", desc, store)
    [get] = backend.matching("GET")
    assert get.header("Range") == "bytes=40000-"
    assert store.info(desc.digest).size == len(data)


def test_connection_lost_mid_body_resumes_at_the_offset(registry: FakeRegistry,
                                                        store: FileStore) -> None:
    data = os.urandom(1_000_000)
    registry.put_blob("app", data)
    registry.fail_blob_after = [300_000, 200_000]
    client, backend = make(registry)
    desc = blob_desc(data)
    client.fetch_blob_into("reg.test/app", desc, store)
    assert [r.header("Range") for r in backend.matching("GET")] == \
        [None, "bytes=300000-", "bytes=500000-"]
    with store.reader_at(desc.digest) as r:
        assert r.read_at(0, len(data)) == data


def test_registry_gone_keeps_the_partial_ingest(registry: FakeRegistry,
                                                store: FileStore) -> None:
    data = os.urandom(500_000)
    registry.put_blob("app", data)
    registry.fail_blob_after = [123_456]
    client, backend = make(registry)
    desc = blob_desc(data)
    original = backend.handler

    def dies(req: Request) -> object:
        if len(backend.requests) > 1:
            return ConnectionFailed("connection refused")
        return original(req)

    backend.handler = dies  # type: ignore[assignment]
    with pytest.raises(Unavailable) as e:
        client.fetch_blob_into("reg.test/app", desc, store)
    assert "http://reg.test/v2/app/blobs/" in str(e.value)
    assert "connection refused" in str(e.value)
    assert "123456 of 500000 bytes kept" in str(e.value)
    assert store.status(f"pull-{desc.digest}").offset == 123_456
    backend.handler = original  # type: ignore[assignment]
    backend.requests.clear()
    client.fetch_blob_into("reg.test/app", desc, store)
    assert [r.header("Range") for r in backend.matching("GET")] == ["bytes=123456-"]


def test_registry_ignoring_range_gets_a_full_download(registry: FakeRegistry,
                                                      store: FileStore) -> None:
    data = os.urandom(50_000)
    registry.put_blob("app", data)
    registry.ignore_range = True
    desc = blob_desc(data)
    with store.writer(f"pull-{desc.digest}", desc.size, desc.digest) as w:
        w.write(data[:10_000])
    client, _ = make(registry)
    client.fetch_blob_into("reg.test/app", desc, store)
    with store.reader_at(desc.digest) as r:
        assert r.read_at(0, len(data)) == data


def test_digest_mismatch_commits_nothing_and_aborts(registry: FakeRegistry,
                                                    store: FileStore) -> None:
    data = os.urandom(10_000)
    desc = blob_desc(data)
    registry.blobs[("app", desc.digest)] = b"X" + data[1:]  # same size, other bytes
    client, _ = make(registry)
    with pytest.raises(FailedPrecondition, match=f"failed to verify {desc.digest}"):
        client.fetch_blob_into("reg.test/app", desc, store)
    with pytest.raises(NotFound):
        store.info(desc.digest)
    assert store.list_statuses() == []


def test_oversized_blob_is_cut_off(registry: FakeRegistry, store: FileStore) -> None:
    data = os.urandom(10_000)
    desc = blob_desc(data)
    registry.blobs[("app", desc.digest)] = data + b"more"
    client, _ = make(registry)
    with pytest.raises(FailedPrecondition, match="more than the expected 10000 bytes"):
        client.fetch_blob_into("reg.test/app", desc, store)
    assert store.list_statuses() == []


def test_blob_redirect_to_storage_without_authorization(store: FileStore) -> None:
    registry = FakeRegistry(auth="basic")
    registry.redirect_blobs = True
    data = os.urandom(1000)
    registry.put_blob("app", data)
    from pydeskd.containerd.registry import Credentials, Explicit

    backend = FakeBackend(registry)
    client = RegistryClient(RegistryHosts(insecure=("reg.test",)),
                            Explicit(Credentials("user", "secret")),
                            transport=Transport(backend, sleep=lambda s: None))
    client.fetch_blob_into("reg.test/app", blob_desc(data), store)
    [storage] = [r for r in backend.requests if r.host == "storage.test"]
    assert storage.header("Authorization") is None
    assert backend.requests[-2].header("Authorization", ).startswith("Basic ")  # type: ignore[union-attr]


def test_concurrent_fetches_of_one_digest_download_once(registry: FakeRegistry,
                                                        store: FileStore) -> None:
    data = os.urandom(2_000_000)
    registry.put_blob("app", data)
    client, backend = make(registry)
    desc = blob_desc(data)
    results: list[bool] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def run() -> None:
        start.wait()
        try:
            results.append(client.fetch_blob_into("reg.test/app", desc, store))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [False] * 5 + [True]
    assert len(backend.matching("GET", "/blobs/")) == 1


def test_fetch_all_in_parallel(registry: FakeRegistry, store: FileStore) -> None:
    blobs = [os.urandom(20_000 + i) for i in range(5)]
    for b in blobs:
        registry.put_blob("app", b)
    client, _ = make(registry)
    descs = [blob_desc(b) for b in blobs]
    events = Collector()
    assert client.fetch_all("reg.test/app", [*descs, descs[0]], store, events) == \
        [True] * 5 + [False]
    for d in descs:
        assert store.info(d.digest).size == d.size
    waiting = [e.digest for e in events.events if e.status is Status.WAITING]
    assert waiting == [d.digest for d in descs[3:]] + [descs[0].digest]


def test_fetch_all_raises_after_every_download_ended(registry: FakeRegistry,
                                                     store: FileStore) -> None:
    good = os.urandom(1000)
    registry.put_blob("app", good)
    client, _ = make(registry)
    with pytest.raises(NotFound, match="blob unknown"):
        client.fetch_all("reg.test/app", [blob_desc(b"missing"), blob_desc(good)], store)
    assert store.info(sha(good)).size == 1000


def test_fetch_blob_small_verified(registry: FakeRegistry) -> None:
    registry.put_blob("app", b'{"a":1}')
    client, _ = make(registry)
    assert client.fetch_blob("reg.test/app", blob_desc(b'{"a":1}')) == b'{"a":1}'
    registry.blobs[("app", sha(b'{"a":1}'))] = b'{"a":2}'
    with pytest.raises(FailedPrecondition):
        client.fetch_blob("reg.test/app", blob_desc(b'{"a":1}'))


# --- mirrors ----------------------------------------------------------------------------------


def test_mirror_failure_falls_through_to_the_next_endpoint(store: FileStore) -> None:
    hub = FakeRegistry(host="registry-1.docker.io")
    data = b"layer"
    hub.put_blob("library/busybox", data)
    digest, _ = _manifest(hub, "library/busybox", "latest")
    mirror = FakeRegistry(host="mirror.test")  # up, but has nothing

    def route(req: Request) -> object:
        if req.host == "down.test":
            return ConnectionFailed("connection refused")
        return (mirror if req.host == "mirror.test" else hub)(req)

    hosts = RegistryHosts(mirrors=("http://down.test", "http://mirror.test"))
    client, backend = make(route, hosts=hosts)
    assert client.resolve("busybox").digest == digest
    client.fetch_blob_into("busybox", blob_desc(data), store)
    hosts_tried = [r.host for r in backend.requests if r.method == "HEAD"]
    assert hosts_tried[0] == "down.test"
    assert "mirror.test" in hosts_tried
    assert hosts_tried[-1] == "registry-1.docker.io"
    assert backend.requests[-1].url.startswith("https://registry-1.docker.io/v2/library/busybox/")


def test_mirror_serves_when_it_has_the_content() -> None:
    mirror = FakeRegistry(host="mirror.test")
    digest, _ = _manifest(mirror, "library/busybox", "latest")
    client, backend = make(mirror, hosts=RegistryHosts(mirrors=("http://mirror.test",)))
    assert client.resolve("busybox").digest == digest
    assert {r.host for r in backend.requests} == {"mirror.test"}


# --- push -------------------------------------------------------------------------------------


def _stored(store: FileStore, data: bytes) -> oci.Descriptor:
    desc = blob_desc(data)
    with store.writer("t", len(data), desc.digest) as w:
        w.write(data)
        w.commit(len(data), desc.digest)
    return desc


def test_push_monolithic_then_exists(registry: FakeRegistry, store: FileStore) -> None:
    data = os.urandom(5000)
    desc = _stored(store, data)
    client, backend = make(registry)
    events = Collector()
    assert client.push_blob("reg.test/app", desc, store, events) == "uploaded"
    assert registry.blobs[("app", desc.digest)] == data
    assert [r.method for r in backend.requests] == ["HEAD", "POST", "PUT"]
    assert events.statuses(desc.digest) == [Status.PUSHING, Status.PUSHED]
    put = backend.requests[-1]
    # The relative Location resolved, its state kept, the digest added.
    assert put.path.startswith("/v2/app/blobs/uploads/")
    assert put.query["_state"] == ["s0"] and put.query["digest"] == [desc.digest]
    events = Collector()
    assert client.push_blob("reg.test/app", desc, store, events) == "exists"
    assert events.statuses(desc.digest) == [Status.LAYER_EXISTS]


def test_push_chunked(registry: FakeRegistry, store: FileStore) -> None:
    data = os.urandom(10_000)
    desc = _stored(store, data)
    client, backend = make(registry, chunk_size=4096, monolithic_limit=4096)
    events = Collector()
    client.push_blob("reg.test/app", desc, store, events)
    assert registry.blobs[("app", desc.digest)] == data
    patches = backend.matching("PATCH")
    assert [p.header("Content-Range") for p in patches] == ["0-4095", "4096-8191", "8192-9999"]
    # Each PATCH goes where the previous answer's Location said.
    assert [p.query["_state"] for p in patches] == [["s0"], ["s4096"], ["s8192"]]
    assert backend.matching("PUT")[0].body == b""
    progress = [e.current for e in events.events if e.status is Status.PUSHING]
    assert progress == [0, 4096, 8192, 10000]


def test_push_cross_repository_mount(registry: FakeRegistry, store: FileStore) -> None:
    data = os.urandom(3000)
    desc = _stored(store, data)
    registry.put_blob("src", data)
    client, backend = make(registry)
    events = Collector()
    assert client.push_blob("reg.test/dst", desc, store, events,
                            mount_from=["docker.io/library/x", "reg.test/src"]) == "mounted"
    assert registry.blobs[("dst", desc.digest)] == data
    [post] = backend.matching("POST")
    assert post.query == {"mount": [desc.digest], "from": ["src"]}
    assert events.events[-1].status is Status.MOUNTED
    assert events.events[-1].detail == "reg.test/src"


def test_push_mount_refused_uses_the_offered_session(registry: FakeRegistry,
                                                     store: FileStore) -> None:
    data = os.urandom(3000)
    desc = _stored(store, data)
    registry.mount_allowed = False
    client, backend = make(registry)
    assert client.push_blob("reg.test/dst", desc, store,
                            mount_from=["reg.test/src"]) == "uploaded"
    assert [r.method for r in backend.requests] == ["HEAD", "POST", "PUT"]


def test_push_with_token_auth_and_mount_scopes(store: FileStore) -> None:
    from pydeskd.containerd.registry import Credentials, Explicit

    registry = FakeRegistry(auth="token")
    data = os.urandom(100)
    desc = _stored(store, data)
    registry.put_blob("src", data)
    backend = FakeBackend(registry)
    client = RegistryClient(RegistryHosts(insecure=("reg.test",)),
                            Explicit(Credentials("user", "secret")),
                            transport=Transport(backend, sleep=lambda s: None))
    assert client.push_blob("reg.test/dst", desc, store, mount_from=["reg.test/src"]) == "mounted"
    scopes = [r.query["scope"] for r in backend.matching("GET", "auth.test")]
    assert ["repository:dst:pull,push", "repository:src:pull"] in [sorted(s) for s in scopes]


def test_push_manifest(registry: FakeRegistry) -> None:
    client, backend = make(registry)
    data = b'{"schemaVersion":2}'
    assert client.push_manifest("reg.test/app", "v2", MANIFEST, data) == sha(data)
    assert registry.manifests[("app", "v2")] == (MANIFEST, data)
    assert backend.requests[0].header("Content-Type") == MANIFEST


def test_breaks_with_progress_are_resumed_beyond_the_bound(registry: FakeRegistry,
                                                           store: FileStore) -> None:
    from pydeskd.containerd.registry import fetch

    data = os.urandom(1_000_000)
    registry.put_blob("app", data)
    # More breaks than MAX_RESUMES, each after some progress.
    registry.fail_blob_after = [100_000] * (fetch.MAX_RESUMES + 3)
    client, backend = make(registry)
    desc = blob_desc(data)
    client.fetch_blob_into("reg.test/app", desc, store)
    assert len(backend.matching("GET")) == fetch.MAX_RESUMES + 4
    assert store.info(desc.digest).size == len(data)


def test_fetch_blob_too_large(registry: FakeRegistry) -> None:
    desc = blob_desc(b'{"a":1}')
    registry.blobs[("app", desc.digest)] = b'{"a":1}   '
    client, _ = make(registry)
    with pytest.raises(FailedPrecondition, match="more than the expected 7 bytes"):
        client.fetch_blob("reg.test/app", desc)


@pytest.mark.parametrize("fault", ["lost", "dropped", "503"])
def test_chunked_push_goes_on_from_the_upload_status(registry: FakeRegistry, store: FileStore,
                                                     fault: str) -> None:
    data = os.urandom(10_000)
    desc = _stored(store, data)
    registry.patch_faults = ["ok", fault]  # the second chunk's PATCH fails
    client, backend = make(registry, chunk_size=4096, monolithic_limit=4096)
    assert client.push_blob("reg.test/app", desc, store) == "uploaded"
    assert registry.blobs[("app", desc.digest)] == data
    ranges = [p.header("Content-Range") for p in backend.matching("PATCH")]
    resent = "8192-9999" if fault == "lost" else "4096-8191"
    assert ranges == ["0-4095", "4096-8191", resent, *(["8192-9999"] if fault != "lost" else [])]
    [status] = backend.matching("GET", "/uploads/")
    # The next PATCH goes to the Location the status answer gave.
    assert backend.matching("PATCH")[2].query["_state"][0].startswith("g")
    assert status.query["_state"] == ["s4096"]


def test_chunked_push_gives_up_after_failures_in_a_row(registry: FakeRegistry,
                                                       store: FileStore) -> None:
    from pydeskd.containerd.registry import push

    desc = _stored(store, os.urandom(10_000))
    registry.patch_faults = ["dropped"] * (push.MAX_CHUNK_FAILURES + 1)
    client, backend = make(registry, chunk_size=4096, monolithic_limit=4096)
    with pytest.raises(Unavailable, match=r"PATCH http://reg\.test/v2/app/blobs/uploads/"):
        client.push_blob("reg.test/app", desc, store)
    assert len(backend.matching("PATCH")) == push.MAX_CHUNK_FAILURES + 1


def test_an_unreachable_mirror_is_skipped_for_a_while(store: FileStore) -> None:
    from pydeskd.containerd.registry.client import MIRROR_DOWN_FOR

    hub = FakeRegistry(host="registry-1.docker.io")
    _manifest(hub, "library/busybox", "latest")
    now = [0.0]

    def route(req: Request) -> object:
        return ConnectionFailed("connection refused") if req.host == "down.test" else hub(req)

    client, backend = make(route, hosts=RegistryHosts(mirrors=("http://down.test",)),
                           clock=lambda: now[0])
    client.resolve("busybox")
    attempts = len([r for r in backend.requests if r.host == "down.test"])
    assert attempts == client.transport.max_attempts
    client.resolve("busybox")
    assert len([r for r in backend.requests if r.host == "down.test"]) == attempts
    now[0] += MIRROR_DOWN_FOR + 1
    client.resolve("busybox")
    assert len([r for r in backend.requests if r.host == "down.test"]) == 2 * attempts
