"""Conformance suite for the content store interface (``pydeskd.containerd.content.Store``).

Every test takes the ``store`` fixture and uses only the Protocol's methods, so a new
implementation joins the suite by adding a factory to ``IMPLEMENTATIONS``. Tests that need a
second handle on the same storage (a restarted daemon) use ``reopen``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pydeskd.containerd.content import FileStore, Info, Store, validate_digest
from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

Factory = Callable[[Path], Store]
IMPLEMENTATIONS: dict[str, Factory] = {"filestore": FileStore}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def factory(request: pytest.FixtureRequest) -> Factory:
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def store(factory: Factory, tmp_path: Path) -> Iterator[Store]:
    yield factory(tmp_path / "content")


@pytest.fixture
def reopen(factory: Factory, tmp_path: Path) -> Callable[[], Store]:
    """A fresh store object over the same storage, as after a daemon restart."""
    return lambda: factory(tmp_path / "content")


def dgst(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put(store: Store, data: bytes, ref: str = "r", labels: dict[str, str] | None = None) -> Info:
    with store.writer(ref, total=len(data), expected=dgst(data)) as w:
        w.write(data)
        return w.commit(len(data), dgst(data), labels)


def read_all(store: Store, digest: str) -> bytes:
    with store.reader_at(digest) as r:
        return r.read_at(0, r.size)


def all_digests(store: Store, filters: tuple[str, ...] = ()) -> list[str]:
    seen: list[str] = []
    store.walk(lambda info: seen.append(info.digest), filters)
    return sorted(seen)


def test_write_commit_read_back(store: Store) -> None:
    data = b"hello content store\n" * 1000
    info = put(store, data)
    assert info.digest == dgst(data)
    assert info.size == len(data)
    assert read_all(store, info.digest) == data
    with store.reader_at(info.digest) as r:
        assert r.read_at(6, 7) == b"content"
        assert r.read_at(len(data) - 1, 10) == b"\n"
    assert store.info(info.digest).size == len(data)
    # the ingest is gone once committed
    assert store.list_statuses() == []
    with pytest.raises(NotFound):
        store.status("r")


def test_commit_without_expected_digest_uses_computed(store: Store) -> None:
    with store.writer("noexp") as w:
        w.write(b"abc")
        info = w.commit(0, None)
    assert info.digest == dgst(b"abc")
    assert read_all(store, dgst(b"abc")) == b"abc"


def test_empty_blob(store: Store) -> None:
    info = put(store, b"")
    assert info.size == 0
    assert read_all(store, dgst(b"")) == b""


def test_resume_after_writer_dropped(store: Store, reopen: Callable[[], Store]) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    half = len(data) // 2
    w = store.writer("layer-1", total=len(data), expected=dgst(data))
    w.write(data[:half])
    w.close()  # dropped mid-way: the connection broke

    st = store.status("layer-1")
    assert (st.ref, st.offset, st.total, st.expected) == ("layer-1", half, len(data), dgst(data))

    # a restarted daemon resumes from the offset; the digest state is rebuilt from disk
    again = reopen()
    with again.writer("layer-1", total=len(data), expected=dgst(data)) as w2:
        assert w2.status().offset == half
        assert w2.digest() == dgst(data[:half])
        w2.write(data[half:])
        info = w2.commit(len(data), dgst(data))
    assert info.digest == dgst(data)
    assert read_all(again, info.digest) == data
    assert again.list_statuses() == []


def test_size_mismatch_commits_nothing(store: Store) -> None:
    w = store.writer("short", total=10)
    w.write(b"12345")
    with pytest.raises(FailedPrecondition, match="size"):
        w.commit(10, dgst(b"1234567890"))
    assert all_digests(store) == []
    with pytest.raises(NotFound):
        store.info(dgst(b"12345"))
    # containerd semantics: the ingest stays (unlocked) for the caller to resume or abort
    assert store.status("short").offset == 5
    with store.writer("short") as w2:
        w2.write(b"67890")
        assert w2.commit(10, dgst(b"1234567890")).size == 10


def test_digest_mismatch_nothing_visible(store: Store) -> None:
    w = store.writer("bad")
    w.write(b"tampered")
    wrong = dgst(b"original")
    with pytest.raises(FailedPrecondition, match="digest"):
        w.commit(8, wrong)
    assert all_digests(store) == []
    for d in (wrong, dgst(b"tampered")):
        with pytest.raises(NotFound):
            store.info(d)
        with pytest.raises(NotFound):
            store.reader_at(d)
    # the writer is unusable after a failed commit; the ingest can be aborted
    with pytest.raises(FailedPrecondition):
        w.write(b"more")
    store.abort("bad")
    assert store.list_statuses() == []


def test_commit_existing_blob_already_exists(store: Store) -> None:
    put(store, b"same", labels={"keep": "me"})
    # knowing the digest up front: refused before any byte is sent
    with pytest.raises(AlreadyExists):
        store.writer("again", expected=dgst(b"same"))
    # not knowing it: refused at commit, the existing blob and its labels untouched
    with store.writer("again2") as w:
        w.write(b"same")
        with pytest.raises(AlreadyExists):
            w.commit(4, None, {"other": "x"})
    assert read_all(store, dgst(b"same")) == b"same"
    assert dict(store.info(dgst(b"same")).labels) == {"keep": "me"}
    assert store.list_statuses() == []


def test_labels_update_and_read(store: Store, reopen: Callable[[], Store]) -> None:
    info = put(store, b"blob", labels={"a": "1", "b": "2"})
    assert dict(store.info(info.digest).labels) == {"a": "1", "b": "2"}

    # field paths: set one, remove one (absent from the given labels), leave the rest
    new = Info(info.digest, info.size, 0, 0, {"a": "10", "c": "3"})
    updated = store.update(new, ["labels.a", "labels.b"])
    assert dict(updated.labels) == {"a": "10"}
    updated = store.update(new, ["labels.c"])
    assert dict(updated.labels) == {"a": "10", "c": "3"}
    assert updated.created_at == info.created_at
    assert updated.updated_at >= info.updated_at
    # size and digest are not updatable; "labels" replaces all
    assert dict(store.update(Info(info.digest, 999, 0, 0, {"z": "9"}), ["labels"]).labels) == {
        "z": "9"
    }
    assert store.info(info.digest).size == 4
    assert dict(reopen().info(info.digest).labels) == {"z": "9"}  # persisted

    with pytest.raises(InvalidArgument):
        store.update(new, ["size"])
    with pytest.raises(InvalidArgument):
        store.update(Info(info.digest, 4, 0, 0, {"k": "v" * 5000}), ["labels.k"])
    with pytest.raises(NotFound):
        store.update(Info(dgst(b"nope"), 1, 0, 0, {}), ["labels"])


def test_walk_filters(store: Store) -> None:
    a = put(store, b"a", "ra", {"kind": "layer", "ref.x": "1"}).digest
    b = put(store, b"b", "rb", {"kind": "config"}).digest
    c = put(store, b"c", "rc").digest
    assert all_digests(store) == sorted([a, b, c])
    assert all_digests(store, ("labels.kind==layer",)) == [a]
    assert all_digests(store, ("labels.kind",)) == sorted([a, b])
    assert all_digests(store, ("labels.ref.x",)) == [a]
    assert all_digests(store, ("labels.kind==config", f"digest=={c}")) == sorted([b, c])
    assert all_digests(store, ("labels.kind==nothing",)) == []
    for bad in ("size>3", "labels.", f"digest=={c[:-1]}"):
        with pytest.raises(InvalidArgument):
            store.walk(lambda _: None, (bad,))


def test_delete(store: Store) -> None:
    d = put(store, b"gone", labels={"x": "y"}).digest
    keep = put(store, b"kept", "r2").digest
    store.delete(d)
    with pytest.raises(NotFound):
        store.info(d)
    with pytest.raises(NotFound):
        store.reader_at(d)
    with pytest.raises(NotFound):
        store.delete(d)
    assert all_digests(store) == [keep]
    # committing the same content again starts with no stale labels
    assert dict(put(store, b"gone", "r3").labels) == {}
    assert dict(store.info(d).labels) == {}


BAD_DIGESTS = [
    "",
    "sha256:",
    "sha256:" + "0" * 63,
    "sha256:" + "0" * 65,
    "sha256:" + "A" * 64,
    "sha512:" + "0" * 128,
    "0" * 64,
    "sha256:../../../../etc/passwd",
    "sha256:" + "0" * 62 + "/.",
    "sha256:" + "0" * 64 + "\n",
]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
def test_bad_digests_rejected(store: Store, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_digest(bad)
    with pytest.raises(InvalidArgument):
        store.info(bad)
    with pytest.raises(InvalidArgument):
        store.reader_at(bad)
    with pytest.raises(InvalidArgument):
        store.delete(bad)
    with pytest.raises(InvalidArgument):
        store.writer("r", expected=bad)
    with pytest.raises(InvalidArgument):
        store.update(Info(bad, 0, 0, 0, {}), ["labels"])
    with store.writer("ok") as w:
        w.write(b"x")
        with pytest.raises(InvalidArgument):
            w.commit(1, bad)
    assert all_digests(store) == []


def test_bad_refs_rejected(store: Store) -> None:
    for bad in ("", "a\0b", "x" * 5000):
        with pytest.raises(InvalidArgument):
            store.writer(bad)


def test_same_ref_second_writer_unavailable(store: Store, reopen: Callable[[], Store]) -> None:
    w = store.writer("busy")
    with pytest.raises(Unavailable):
        store.writer("busy")
    with pytest.raises(Unavailable):
        reopen().writer("busy")  # another store object (another process) over the same root
    with pytest.raises(Unavailable):
        store.abort("busy")
    w.write(b"x")
    w.close()
    with store.writer("busy") as w2:  # free again once the first is closed
        assert w2.status().offset == 1


def test_different_refs_same_digest(store: Store) -> None:
    data = b"shared layer"
    w1 = store.writer("pull-1")
    w2 = store.writer("pull-2")
    w1.write(data)
    w2.write(data)
    assert w1.commit(len(data), dgst(data)).digest == dgst(data)
    with pytest.raises(AlreadyExists):
        w2.commit(len(data), dgst(data))
    assert read_all(store, dgst(data)) == data
    assert store.list_statuses() == []


def test_racing_refs_exactly_one_commits(store: Store) -> None:
    data = b"race" * 10000
    results: list[str] = []
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        with store.writer(f"race-{i}") as w:
            w.write(data)
            barrier.wait()
            try:
                w.commit(len(data), dgst(data))
                results.append("ok")
            except AlreadyExists:
                results.append("exists")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["exists"] * 7 + ["ok"]
    assert read_all(store, dgst(data)) == data


def test_abort_and_statuses(store: Store) -> None:
    for ref in ("pull/a", "pull/b", "push/c"):
        with store.writer(ref, total=100) as w:
            w.write(b"12")
    assert [s.ref for s in store.list_statuses()] == sorted(["pull/a", "pull/b", "push/c"])
    assert [s.ref for s in store.list_statuses("pull/")] == ["pull/a", "pull/b"]
    assert all(s.offset == 2 and s.total == 100 for s in store.list_statuses())
    store.abort("pull/a")
    with pytest.raises(NotFound):
        store.status("pull/a")
    with pytest.raises(NotFound):
        store.abort("pull/a")
    # an aborted ref starts over from zero
    with store.writer("pull/a") as w:
        assert w.status().offset == 0
    assert all_digests(store) == []


def test_blobs_are_read_only_files(tmp_path: Path) -> None:
    """FileStore specific: a committed blob is a read-only file under blobs/sha256/<hex>."""
    store = FileStore(tmp_path)
    d = put(store, b"ro").digest
    path = tmp_path / "blobs" / "sha256" / d.removeprefix("sha256:")
    assert path.read_bytes() == b"ro"
    assert path.stat().st_mode & 0o222 == 0
    assert list((tmp_path / "ingests").iterdir()) == []


def test_ref_reused_after_commit_starts_fresh(store: Store) -> None:
    first = put(store, b"first", ref="reused")
    with store.writer("reused") as w:
        assert w.status().offset == 0  # never appends to the committed blob
        w.write(b"second")
        w.commit(6, dgst(b"second"))
    assert read_all(store, first.digest) == b"first"
    assert read_all(store, dgst(b"second")) == b"second"


def test_same_ref_racing_writers_one_holds_it(store: Store) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    held = threading.Event()
    release = threading.Event()

    def run() -> None:
        barrier.wait()
        try:
            w = store.writer("contended")
        except Unavailable:
            outcomes.append("unavailable")
            return
        outcomes.append("held")
        held.set()
        release.wait(5)
        w.close()

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    assert held.wait(5)
    # wait until the seven losers reported, then let the winner go
    for _ in range(500):
        if len(outcomes) == 8:
            break
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["held"] + ["unavailable"] * 7
