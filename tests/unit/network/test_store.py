"""The store: atomic files, read back after a crash; unreadable files are skipped."""

from __future__ import annotations

from pathlib import Path

from pydeskd.network.model import Active, Attachment, Endpoint, EndpointConfig, Network, Pool
from pydeskd.network.store import NetworkStore


def test_round_trip_and_addresses_in_use(tmp_path: Path) -> None:
    store = NetworkStore(tmp_path)
    net = Network("n1", "app", "bridge", "now", "pd-n1", (Pool("10.0.0.0/24", "10.0.0.1"),))
    store.put_network(net)
    ep = Endpoint("n1", "e1", "10.0.0.2", 24, "10.0.0.1", "02:42:0a:00:00:02", "eth0", "pdv1")
    store.put_attachment(Attachment("c1", "one", "app", (EndpointConfig("n1"),),
                                    Active("/x/netns/c1", (ep,))))
    store.put_attachment(Attachment("c2", "two", "app", (EndpointConfig("n1", ipv4="10.0.0.9"),)))
    again = NetworkStore(tmp_path)   # what a restarted daemon reads
    assert again.networks == {"n1": net}
    assert again.attachments["c1"].active == Active("/x/netns/c1", (ep,))
    assert again.addresses_in_use("n1") == {"10.0.0.2", "10.0.0.9"}
    assert again.addresses_in_use("n1", but="c2") == {"10.0.0.2"}


def test_a_torn_temporary_file_is_ignored(tmp_path: Path) -> None:
    store = NetworkStore(tmp_path)
    store.put_attachment(Attachment("c1", "one", "bridge"))
    # A crash during a write leaves only the temporary file: the old version stays valid.
    (tmp_path / "attachments" / ".c1.json.tmp").write_text('{"cid": "c1", "na')
    (tmp_path / "attachments" / "broken.json").write_text("{not json")
    again = NetworkStore(tmp_path)
    assert list(again.attachments) == ["c1"]


def test_delete(tmp_path: Path) -> None:
    store = NetworkStore(tmp_path)
    store.put_attachment(Attachment("c1", "one", "bridge"))
    store.delete_attachment("c1")
    store.delete_attachment("c1")
    assert NetworkStore(tmp_path).attachments == {}
