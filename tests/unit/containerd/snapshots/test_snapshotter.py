"""Conformance suite for the ``Snapshotter`` interface, plus the overlay layout specifics.

Tests use only the Protocol's methods unless their name says "overlay"; a new implementation
joins by adding a factory to ``IMPLEMENTATIONS``. No mounts here (the returned descriptions are
checked); tests/integration/snapshots performs them for real.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from pydeskd.containerd.snapshots import Info, Kind, Mount, Snapshotter, Usage
from pydeskd.containerd.snapshots.overlay import OverlaySnapshotter

Factory = Callable[[Path], Snapshotter]
IMPLEMENTATIONS: dict[str, Factory] = {"overlay": OverlaySnapshotter}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def factory(request: pytest.FixtureRequest) -> Factory:
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def sn(factory: Factory, tmp_path: Path) -> Snapshotter:
    return factory(tmp_path / "snapshots")


def upper(mounts: list[Mount]) -> Path:
    """The writable directory of an ACTIVE snapshot's mounts."""
    (mount,) = mounts
    if mount.type == "bind":
        return Path(mount.source)
    return Path(next(o for o in mount.options if o.startswith("upperdir="))[9:])


def commit_layer(sn: Snapshotter, name: str, parent: str = "",
                 files: dict[str, bytes] | None = None) -> None:
    key = f"{name}-active"
    root = upper(sn.prepare(key, parent))
    for rel, data in (files or {}).items():
        (root / rel).write_bytes(data)
    sn.commit(name, key)


def test_prepare_commit_stat_lifecycle(sn: Snapshotter) -> None:
    sn.prepare("a", labels={"x": "1"})
    info = sn.stat("a")
    assert (info.name, info.parent, info.kind) == ("a", "", Kind.ACTIVE)
    assert dict(info.labels) == {"x": "1"}
    assert info.created_at > 0 and info.updated_at >= info.created_at
    sn.commit("base", "a")
    with pytest.raises(NotFound):
        sn.stat("a")  # the key is gone: the snapshot is now named by its commit name
    assert sn.stat("base").kind is Kind.COMMITTED
    assert dict(sn.stat("base").labels) == {"x": "1"}  # labels kept unless commit gives some
    sn.prepare("b", "base")
    assert sn.stat("b").parent == "base"
    sn.commit("top", "b", labels={"y": "2"})
    assert dict(sn.stat("top").labels) == {"y": "2"}


def test_errors(sn: Snapshotter) -> None:
    sn.prepare("a")
    with pytest.raises(AlreadyExists):
        sn.prepare("a")
    with pytest.raises(NotFound):
        sn.prepare("b", "missing")
    with pytest.raises(FailedPrecondition):
        sn.prepare("b", "a")  # an active snapshot cannot be a parent
    with pytest.raises(InvalidArgument):
        sn.prepare("")
    with pytest.raises(InvalidArgument):
        sn.prepare("c", labels={"k": "v" * 5000})
    sn.commit("base", "a")
    sn.view("v", "base")
    with pytest.raises(FailedPrecondition):
        sn.commit("x", "v")  # a view cannot be committed
    with pytest.raises(FailedPrecondition):
        sn.commit("x", "base")
    sn.prepare("p", "base")
    with pytest.raises(AlreadyExists):
        sn.commit("base", "p")
    assert sn.stat("p").kind is Kind.ACTIVE  # a failed commit changes nothing
    with pytest.raises(NotFound):
        sn.commit("x", "missing")
    with pytest.raises(NotFound):
        sn.remove("missing")
    with pytest.raises(NotFound):
        sn.mounts("missing")
    with pytest.raises(FailedPrecondition):
        sn.mounts("base")


def test_remove_with_children_is_refused(sn: Snapshotter) -> None:
    commit_layer(sn, "l1")
    commit_layer(sn, "l2", "l1")
    sn.view("v", "l2")
    with pytest.raises(FailedPrecondition, match="children"):
        sn.remove("l1")
    with pytest.raises(FailedPrecondition):
        sn.remove("l2")
    sn.remove("v")
    sn.remove("l2")
    sn.remove("l1")
    names: list[str] = []
    sn.walk(lambda i: names.append(i.name))
    assert names == []


def test_update_labels_by_field_path(sn: Snapshotter) -> None:
    sn.prepare("a", labels={"keep": "1", "drop": "2"})
    info = sn.stat("a")
    new = Info("a", "", Kind.ACTIVE, {"add": "3"})
    assert dict(sn.update(new, ["labels.add", "labels.drop"]).labels) == {"keep": "1", "add": "3"}
    assert dict(sn.update(new).labels) == {"add": "3"}
    assert dict(sn.stat("a").labels) == {"add": "3"}
    assert sn.stat("a").updated_at >= info.updated_at
    with pytest.raises(InvalidArgument):
        sn.update(new, ["parent"])
    with pytest.raises(NotFound):
        sn.update(Info("missing", "", Kind.ACTIVE), ["labels"])


def test_walk_filters(sn: Snapshotter) -> None:
    commit_layer(sn, "l1")
    sn.prepare("c1", "l1", labels={"role": "container"})
    sn.view("v1", "l1")

    def names(*filters: str) -> list[str]:
        out: list[str] = []
        sn.walk(lambda i: out.append(i.name), filters)
        return sorted(out)

    assert names() == ["c1", "l1", "v1"]
    assert names("kind==committed") == ["l1"]
    assert names("parent==l1") == ["c1", "v1"]
    assert names("labels.role") == ["c1"]
    assert names("labels.role==container", "name==v1") == ["c1", "v1"]
    assert names("labels.role==other") == []
    with pytest.raises(InvalidArgument):
        names("kind==weird")
    with pytest.raises(InvalidArgument):
        names("size>3")


def test_usage_of_active_and_committed(sn: Snapshotter) -> None:
    root = upper(sn.prepare("a"))
    assert sn.usage("a") == Usage(0, 0)
    (root / "f").write_bytes(b"x" * 100_000)
    (root / "d").mkdir()
    os.link(root / "f", root / "d" / "hl")  # counted once
    used = sn.usage("a")
    assert used.inodes == 2 and used.size >= 100_000
    sn.commit("c", "a")
    assert sn.usage("c") == used


def test_state_survives_a_restart(factory: Factory, tmp_path: Path) -> None:
    first = factory(tmp_path / "s")
    commit_layer(first, "l1", files={"f": b"1"})
    first.prepare("c", "l1")
    again = factory(tmp_path / "s")
    assert again.stat("l1").kind is Kind.COMMITTED
    assert again.mounts("c") == first.mounts("c")


def test_concurrent_prepares_of_one_key_one_wins(sn: Snapshotter) -> None:
    results: list[str] = []

    def go() -> None:
        try:
            sn.prepare("same")
            results.append("ok")
        except AlreadyExists:
            results.append("exists")

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["exists"] * 7 + ["ok"]


# --- overlay specifics ----------------------------------------------------------------------


def test_overlay_mount_shapes(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path / "s")
    d = tmp_path / "s" / "snapshots"
    assert sn.prepare("a") == [Mount("bind", f"{d}/1/fs", options=("rw", "rbind"))]
    sn.commit("l1", "a")
    assert sn.view("v1", "l1") == [Mount("bind", f"{d}/1/fs", options=("ro", "rbind"))]
    assert sn.prepare("b", "l1") == [Mount("overlay", "overlay", options=(
        f"workdir={d}/3/work", f"upperdir={d}/3/fs", f"lowerdir={d}/1/fs"))]
    sn.commit("l2", "b")
    assert sn.view("v2", "l2") == [
        Mount("overlay", "overlay", options=(f"lowerdir={d}/3/fs:{d}/1/fs",))]
    assert sn.mounts("v2") == sn.view("v3", "l2")
    assert sn.view("empty") == [Mount("bind", f"{d}/6/fs", options=("ro", "rbind"))]
    assert sorted(os.listdir(d)) == ["1", "2", "3", "4", "5", "6"]
    assert not (d / "2" / "work").exists()  # views have no workdir


def test_overlay_ids_are_never_reused(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path / "s")
    sn.prepare("a")
    sn.remove("a")
    sn.prepare("b")
    assert sorted(os.listdir(tmp_path / "s" / "snapshots")) == ["2"]


def test_overlay_cleanup_removes_crash_leftovers_only(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path / "s")
    commit_layer(sn, "l1", files={"f": b"1"})
    d = tmp_path / "s" / "snapshots"
    (d / "new-abc" / "fs").mkdir(parents=True)  # a create that crashed before its rename
    (d / "77" / "fs").mkdir(parents=True)  # renamed, then the transaction never committed
    (d / "rm-1-deadbeef" / "fs").mkdir(parents=True)  # a remove that crashed mid-rmtree
    (d / "stray-file").write_text("x")
    sn.cleanup()
    assert sorted(os.listdir(d)) == ["1"]
    assert (d / "1" / "fs" / "f").read_bytes() == b"1"


def test_overlay_failed_create_leaves_nothing(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sn = OverlaySnapshotter(tmp_path / "s")
    real_rename = os.rename

    def failing(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError):
        sn.prepare("a")
    monkeypatch.setattr(os, "rename", real_rename)
    with pytest.raises(NotFound):
        sn.stat("a")
    assert os.listdir(tmp_path / "s" / "snapshots") == []


def test_overlay_remove_deletes_the_directory(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path / "s")
    root = upper(sn.prepare("a"))
    (root / "sub").mkdir()
    (root / "sub" / "f").write_text("x")
    sn.remove("a")
    assert os.listdir(tmp_path / "s" / "snapshots") == []
