"""Pulling from Debian's docker-registry: anonymous, htpasswd (Basic), token (Bearer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore
from pydeskd.containerd.errors import NotFound, Unauthorized
from pydeskd.containerd.progress import Collector, Status
from pydeskd.containerd.registry import Credentials, DockerConfig, RegistryClient, RegistryHosts
from tests.integration.registry.common import make_client, pull
from tests.support.image_fixtures import CREDENTIALS, BuiltLayout
from tests.support.images import ImageLayout
from tests.support.registry import Registry


def _layout_blobs(layout: Path) -> dict[str, bytes]:
    return {"sha256:" + p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}


@pytest.mark.parametrize("name", ["single", "multi", "zstd", "docker_v2", "multiplatform"])
def test_anonymous_pull_into_file_store(registry: Registry, image_layouts: dict[str, BuiltLayout],
                                        tmp_path: Path, name: str) -> None:
    store = FileStore(tmp_path / "content")
    client, backend = make_client()
    ref = registry.ref(f"test/{name}:latest")
    expected = image_layouts[name].descriptor
    top = client.resolve(ref)
    assert (top.digest, top.size, top.media_type) == \
        (expected.digest, expected.size, expected.media_type)
    events = Collector()
    desc = pull(client, ref, store)
    manifest = oci.Manifest.parse(ImageLayout(image_layouts[name].path).read_blob(desc.digest))
    blobs = _layout_blobs(image_layouts[name].path)
    for d in [manifest.config, *manifest.layers]:
        with store.reader_at(d.digest) as r:
            assert r.read_at(0, d.size) == blobs[d.digest]
    assert store.list_statuses() == []
    assert all(s.url.startswith(f"http://{registry.host}/v2/") for s in backend.sent)
    # A second pull finds every blob in the store.
    client.fetch_all(ref, [manifest.config, *manifest.layers], store, events)
    for d in [manifest.config, *manifest.layers]:
        assert events.statuses(d.digest)[-1] is Status.ALREADY_EXISTS
    assert {e.status for e in events.events} <= {Status.WAITING, Status.ALREADY_EXISTS}


def test_pull_by_digest_and_unknown_names(registry: Registry,
                                          image_layouts: dict[str, BuiltLayout]) -> None:
    client, _ = make_client()
    digest = image_layouts["single"].descriptor.digest
    assert client.resolve(registry.ref(f"test/single@{digest}")).digest == digest
    with pytest.raises(NotFound, match=r"manifest for .*test/single:nope not found"):
        client.resolve(registry.ref("test/single:nope"))
    with pytest.raises(NotFound):
        client.resolve(registry.ref("test/nothing-here:latest"))


def test_htpasswd_right_credentials(htpasswd_registry: Registry, tmp_path: Path) -> None:
    client, _ = make_client(CREDENTIALS)
    pull(client, htpasswd_registry.ref("test/single:latest"), FileStore(tmp_path / "c"))


def test_htpasswd_credentials_from_docker_config(htpasswd_registry: Registry,
                                                 tmp_path: Path) -> None:
    import base64

    config = tmp_path / "config.json"
    auth = base64.b64encode(":".join(CREDENTIALS).encode()).decode()
    config.write_text(json.dumps({"auths": {htpasswd_registry.host: {"auth": auth}}}))
    client = RegistryClient(RegistryHosts(), DockerConfig(config))
    pull(client, htpasswd_registry.ref("test/multi:latest"), FileStore(tmp_path / "c"))


def test_htpasswd_wrong_credentials(htpasswd_registry: Registry) -> None:
    client, _ = make_client((CREDENTIALS[0], "wrong-password"))
    with pytest.raises(Unauthorized) as e:
        client.resolve(htpasswd_registry.ref("test/single:latest"))
    assert str(e.value) == "unauthorized: incorrect username or password"


def test_htpasswd_no_credentials(htpasswd_registry: Registry) -> None:
    client, _ = make_client()
    with pytest.raises(Unauthorized) as e:
        client.resolve(htpasswd_registry.ref("test/single:latest"))
    assert str(e.value) == (f"pull access denied for {htpasswd_registry.host}/test/single, "
                            "repository does not exist or may require 'docker login'")


def test_token_flow_reuses_the_token(token_registry: Registry, tmp_path: Path) -> None:
    ts = token_registry.token_server
    assert ts is not None
    client, backend = make_client(CREDENTIALS)
    pull(client, token_registry.ref("test/multi:latest"), FileStore(tmp_path / "c"))
    # resolve + manifest + config + layers (fetched in parallel): one token for the scope.
    assert ts.token_requests == 1
    blob_gets = [s for s in backend.sent if "/blobs/" in s.url]
    assert len(blob_gets) >= 3
    assert all(s.headers["Authorization"].startswith("Bearer ") for s in blob_gets)
    # Another repository: another scope, another token.
    pull(client, token_registry.ref("test/single:latest"), FileStore(tmp_path / "c2"))
    assert ts.token_requests == 2


def test_token_flow_identity_token(token_registry: Registry, tmp_path: Path) -> None:
    ts = token_registry.token_server
    assert ts is not None
    # What `docker login` stores: a refresh token from an offline password grant.
    import urllib.parse
    import urllib.request

    form = urllib.parse.urlencode({"grant_type": "password", "username": CREDENTIALS[0],
                                   "password": CREDENTIALS[1], "service": ts.service,
                                   "client_id": "test", "access_type": "offline"}).encode()
    with urllib.request.urlopen(ts.realm, form) as answer:
        refresh = json.loads(answer.read())["refresh_token"]
    ts.reset()
    shared, _ = make_client()
    client = RegistryClient(RegistryHosts(), _Fixed(Credentials(identity_token=refresh)),
                            transport=shared.transport)
    pull(client, token_registry.ref("test/single:latest"), FileStore(tmp_path / "c"))
    assert [r.method for r in ts.requests] == ["POST"]


class _Fixed:
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds

    def get(self, host: str) -> Credentials | None:
        return self.creds


def test_token_flow_wrong_password(token_registry: Registry) -> None:
    client, _ = make_client((CREDENTIALS[0], "nope"))
    with pytest.raises(Unauthorized) as e:
        client.resolve(token_registry.ref("test/single:latest"))
    assert str(e.value) == "unauthorized: incorrect username or password"
    assert "nope" not in str(e.value)


def test_token_flow_anonymous_denied(token_registry: Registry) -> None:
    client, _ = make_client()
    with pytest.raises(Unauthorized, match=r"pull access denied for .*test/single, repository"):
        client.resolve(token_registry.ref("test/single:latest"))


def test_connections_are_pooled(registry: Registry, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib3.connection

    from pydeskd.containerd.registry import Transport, Urllib3Backend

    connects: list[int] = []
    real_connect = urllib3.connection.HTTPConnection.connect

    def counting_connect(self: urllib3.connection.HTTPConnection) -> None:
        connects.append(1)
        real_connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting_connect)
    backend = Urllib3Backend()
    client = RegistryClient(transport=Transport(backend))
    for n in range(3):
        pull(client, registry.ref("test/multi:latest"), FileStore(tmp_path / str(n)))
    pool = backend._pool.connection_from_host("127.0.0.1", registry.port, "http")
    # Dozens of requests (HEADs included) over at most one TCP connection per parallel worker.
    assert pool.num_requests > 12
    assert len(connects) <= 3


def test_docker_hub_names_through_mirrors(registry: Registry,
                                          image_layouts: dict[str, BuiltLayout],
                                          tmp_path: Path) -> None:
    from tests.support.registry import free_port

    # The first mirror is down (nothing listens), the second is the local registry: a Hub name
    # (docker.io/test/single) is served by it and registry-1.docker.io is never contacted.
    hosts = RegistryHosts(mirrors=(f"http://127.0.0.1:{free_port()}", registry.url))
    shared, backend = make_client()
    client = RegistryClient(hosts, transport=shared.transport)
    desc = pull(client, "test/single", FileStore(tmp_path / "c"))
    assert desc.digest == image_layouts["single"].descriptor.digest
    assert {s.url.split("/")[2] for s in backend.sent} == \
        {hosts.endpoints("docker.io")[0].host, registry.host}
