"""A registry that goes away mid-download, and comes back: clear error, partial ingest kept,
the next fetch resumes with Range from the ingest's offset."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.content import FileStore
from pydeskd.containerd.errors import Unavailable
from pydeskd.containerd.progress import Collector, Event, Status
from pydeskd.containerd.registry import fetch
from tests.integration.registry.common import make_client
from tests.support.registry import Registry

SIZE = 48 << 20


def test_registry_stopped_mid_download_then_resumed(fresh_registry: Registry, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(SIZE)
    desc = oci.Descriptor(oci.OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(data).hexdigest(), SIZE)
    source = FileStore(tmp_path / "src")
    with source.writer("src", SIZE, desc.digest) as w:
        w.write(data)
        w.commit(SIZE, desc.digest)
    repo = fresh_registry.ref("big/blob")
    client, backend = make_client()
    client.push_blob(repo, desc, source)

    monkeypatch.setattr(fetch, "PROGRESS_INTERVAL", 0.0)  # an event per chunk
    store = FileStore(tmp_path / "dst")

    def stop_registry(event: Event) -> None:
        if event.status is Status.DOWNLOADING and event.current > 0 and fresh_registry.running:
            fresh_registry.stop(kill=True)

    with pytest.raises(Unavailable) as e:
        client.fetch_blob_into(repo, desc, store, stop_registry)
    message = str(e.value)
    assert f"http://{fresh_registry.host}/v2/big/blob/blobs/{desc.digest}" in message
    assert "connection refused" in message
    kept = store.status(fetch.ingest_ref(desc.digest)).offset
    assert 0 < kept < SIZE
    assert f"{kept} of {SIZE} bytes kept" in message

    fresh_registry.start()
    backend.sent.clear()
    events = Collector()
    assert client.fetch_blob_into(repo, desc, store, events) is True
    gets = [s for s in backend.sent if s.method == "GET" and "/blobs/" in s.url]
    assert [g.headers.get("Range") for g in gets] == [f"bytes={kept}-"]
    assert events.events[0].status is Status.DOWNLOADING
    assert events.events[0].current == kept
    with store.reader_at(desc.digest) as r:
        assert hashlib.sha256(r.read_at(0, SIZE)).hexdigest() == desc.digest[7:]
    assert store.list_statuses() == []
    # The registry served a partial response after the restart.
    partial = [a for a in fresh_registry.access_log()
               if a.method == "GET" and "/blobs/" in a.path and a.status == 206]
    assert len(partial) == 1
