"""Helpers shared by the registry client's integration tests."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore
from pydeskd.containerd.errors import AlreadyExists
from pydeskd.containerd.registry import (
    Credentials,
    Explicit,
    RegistryClient,
    RegistryHosts,
    Transport,
    Urllib3Backend,
)
from pydeskd.containerd.registry.transport import RawResponse


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    headers: Mapping[str, str]


class RecordingBackend:
    """The real urllib3 seam, recording what was sent (to assert Range headers and the like)."""

    def __init__(self) -> None:
        self.real = Urllib3Backend()
        self.sent: list[Sent] = []
        self._lock = threading.Lock()

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float) -> RawResponse:
        with self._lock:
            self.sent.append(Sent(method, url, dict(headers)))
        return self.real.request(method, url, headers, body, timeout)


def make_client(creds: tuple[str, str] | None = None, **kw: object) \
        -> tuple[RegistryClient, RecordingBackend]:
    backend = RecordingBackend()
    transport = Transport(backend, backoff=0.05)
    client = RegistryClient(RegistryHosts(), Explicit(Credentials(*creds) if creds else None),
                            transport=transport, **kw)  # type: ignore[arg-type]
    return client, backend


def store_layout(layout: Path, store: FileStore) -> None:
    """Every blob of an OCI layout into ``store`` (what a push reads from)."""
    for path in (layout / "blobs" / "sha256").iterdir():
        data = path.read_bytes()
        digest = "sha256:" + path.name
        try:
            with store.writer(f"load-{digest}", len(data), digest) as w:
                w.write(data)
                w.commit(len(data), digest)
        except AlreadyExists:
            pass


def pull(client: RegistryClient, ref: str, store: FileStore) -> oci.Descriptor:
    """Resolve, then fetch the manifest (the host platform's, for an index), config and layers.

    A minimal pull for these tests; the real orchestration is containerd/pull.py.
    """
    top = client.resolve(ref)
    desc = top
    data = client.fetch_manifest(ref, top)
    if top.media_type in oci.INDEX_TYPES:
        desc = oci.Index.parse(data).select(oci.PlatformMatcher(oci.Platform("linux", "amd64")))
        data = client.fetch_manifest(ref, desc)
    manifest = oci.Manifest.parse(data)
    client.fetch_all(ref, [manifest.config, *manifest.layers], store)
    return desc
