"""VolumeService semantics without a daemon: names, create/get/remove/prune, filters, in-use
from container records and holds, persistence across instances, events, tmpfs mounts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument, NotFound
from pydeskd.daemon.volumes import ANONYMOUS_LABEL, VolumeService
from pydeskd.daemon.volumes.service import users_from_records


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, dict[str, str]]] = []

    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> None:
        self.seen.append((type, action, actor_id, dict(attributes or {})))

    def actions(self) -> list[tuple[str, str]]:
        return [(action, actor) for _, action, actor, _ in self.seen]


class Mounter:
    """Records the mounts the service asks for (tmpfs volumes) instead of performing them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.calls.append(("mount", fstype, target, data))

    def mount_fs(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")

    def umount(self, target: str, flags: int) -> None:
        if self.calls and self.calls[-1][0] == "umount" and self.calls[-1][1] == target:
            raise OSError(22, "not mounted")  # unmount() loops until EINVAL
        self.calls.append(("umount", target))


class Mount:
    def __init__(self, name: str, destination: str = "/data", *, type: str = "volume",
                 read_only: bool = False, nocopy: bool = False) -> None:
        self.type, self.name, self.destination = type, name, destination
        self.read_only, self.nocopy, self.propagation = read_only, nocopy, ""


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def svc(tmp_path: Path, events: Events) -> VolumeService:
    return VolumeService(tmp_path / "volumes", events, durable=False)


@pytest.mark.parametrize("name", ["ab", "a.b", "a_b-c", "A9", "x" * 200])
def test_valid_names(svc: VolumeService, name: str) -> None:
    assert svc.create(name).name == name


@pytest.mark.parametrize("name", ["a", "-ab", ".ab", "a/b", "a b", "..", "é1", "a:b"])
def test_invalid_names_are_refused_with_dockers_message(svc: VolumeService, name: str) -> None:
    with pytest.raises(InvalidArgument, match="includes invalid characters for a local volume"):
        svc.create(name)


@pytest.mark.parametrize("opts,ok", [
    ({}, True),
    ({"type": "tmpfs", "device": "tmpfs", "o": "size=1m,uid=1000"}, True),
    ({"type": "tmpfs"}, True),
    ({"type": "nfs", "device": ":/export"}, False),
    ({"type": "none", "device": "/host", "o": "bind"}, False),
    ({"type": "tmpfs", "o": "exec"}, False),
    ({"color": "red"}, False),
])
def test_driver_options(svc: VolumeService, opts: dict[str, str], ok: bool) -> None:
    if ok:
        assert dict(svc.create("v1", driver_opts=opts).options) == opts
    else:
        with pytest.raises(InvalidArgument):
            svc.create("v1", driver_opts=opts)


def test_create_inspect_and_existing_names(svc: VolumeService, events: Events,
                                            tmp_path: Path) -> None:
    vol = svc.create("data", labels={"a": "1"})
    info = svc.inspect("data")
    assert info["Mountpoint"] == str(tmp_path / "volumes" / "data" / "_data")
    assert (tmp_path / "volumes" / "data" / "_data").is_dir()
    assert info["Labels"] == {"a": "1"} and info["Scope"] == "local"
    assert info["CreatedAt"] == vol.created_at and "UsageData" not in info
    # an existing name is returned as it is (labels of the second call ignored)
    assert svc.create("data", labels={"b": "2"}) == vol
    with pytest.raises(InvalidArgument, match='plugin "other" not found'):
        svc.create("fresh", driver="other")
    assert events.actions() == [("create", "data")]
    (tmp_path / "volumes" / "data" / "_data" / "f").write_bytes(b"x" * 10000)
    sized = svc.inspect("data", size=True)
    assert sized["UsageData"]["Size"] >= 10000 and sized["UsageData"]["RefCount"] == 0


def test_anonymous_volumes(svc: VolumeService) -> None:
    vol = svc.create()
    assert len(vol.name) == 64 and vol.anonymous
    assert dict(vol.labels) == {ANONYMOUS_LABEL: ""}
    path = svc.get_or_create("f" * 64, anonymous=True)
    assert path.name == "_data" and svc.get("f" * 64).anonymous


def test_missing_volumes(svc: VolumeService) -> None:
    with pytest.raises(NotFound, match="get nosuch: no such volume"):
        svc.inspect("nosuch")
    with pytest.raises(NotFound, match="get nosuch: no such volume"):
        svc.remove("nosuch")
    svc.remove("nosuch", force=True)


def test_in_use_from_records_and_holds(svc: VolumeService, events: Events) -> None:
    users: dict[str, list[str]] = {"rec": ["c1", "c2"]}
    svc.set_users(lambda: users)
    svc.create("rec")
    svc.get_or_create("held", ref="c3")       # a container being created holds it
    with pytest.raises(FailedPrecondition, match=r"remove rec: volume is in use - \[c1, c2\]"):
        svc.remove("rec")
    with pytest.raises(FailedPrecondition, match=r"remove held: volume is in use - \[c3\]"):
        svc.remove("held", force=True)       # force does not override in use, as Docker
    assert [v["Name"] for v in svc.list({"dangling": ["false"]})] == ["held", "rec"]
    svc.release("c3")
    users.clear()
    assert [v["Name"] for v in svc.list({"dangling": ["true"]})] == ["held", "rec"]
    svc.remove("held")
    svc.remove("rec")
    assert ("destroy", "rec") in events.actions() and svc.list() == []


def test_users_from_records() -> None:
    class Rec:
        def __init__(self, cid: str, mounts: list[dict[str, Any]]) -> None:
            self.id, self.resolved_mounts = cid, mounts

    records = [Rec("c1", [{"type": "volume", "name": "a"}, {"type": "bind", "name": ""}]),
               Rec("c2", [{"type": "volume", "name": "a"}, {"type": "volume", "name": "b"}])]
    assert users_from_records(records) == {"a": ["c1", "c2"], "b": ["c2"]}


def test_list_filters(svc: VolumeService) -> None:
    svc.create("web-data", labels={"tier": "front", "env": "prod"})
    svc.create("db-data", labels={"tier": "back"})
    svc.create("cache")
    svc.set_users(lambda: {"db-data": ["c1"]})

    def names(**filters: list[str]) -> list[str]:
        return [v["Name"] for v in svc.list(filters)]

    assert names() == ["cache", "db-data", "web-data"]
    assert names(name=["data"]) == ["db-data", "web-data"]
    assert names(name=["^web"]) == ["web-data"]
    assert names(name=["cache", "db"]) == ["cache", "db-data"]
    assert names(label=["tier"]) == ["db-data", "web-data"]
    assert names(label=["tier=front", "env=prod"]) == ["web-data"]
    assert names(label=["tier=front", "env=dev"]) == []
    assert names(dangling=["true"]) == ["cache", "web-data"]
    assert names(dangling=["0"]) == ["db-data"]
    assert names(driver=["local"]) == ["cache", "db-data", "web-data"]
    assert names(driver=["nfs"]) == []
    with pytest.raises(InvalidArgument, match="invalid filter 'color'"):
        names(color=["red"])
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling=maybe'"):
        names(dangling=["maybe"])


def test_prune(svc: VolumeService, events: Events, tmp_path: Path) -> None:
    anon_used, anon_free = svc.create(), svc.create()
    svc.create("named", labels={"keep": "no"})
    svc.create("kept", labels={"keep": "yes"})
    svc.set_users(lambda: {anon_used.name: ["c1"]})
    (tmp_path / "volumes" / anon_free.name / "_data" / "f").write_bytes(b"y" * 8192)
    report = svc.prune()
    assert report["VolumesDeleted"] == [anon_free.name]
    assert report["SpaceReclaimed"] >= 8192
    assert svc.prune({"all": ["true"], "label!": ["keep=yes"]})["VolumesDeleted"] == ["named"]
    assert svc.prune({"label": ["keep=yes"]})["VolumesDeleted"] == []   # named: needs all
    assert svc.prune(all_by_default=True)["VolumesDeleted"] == ["kept"]  # API < 1.42
    assert [v["Name"] for v in svc.list()] == [anon_used.name]
    assert ("destroy", anon_free.name) in events.actions()
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling'"):
        svc.prune({"dangling": ["true"]})
    with pytest.raises(InvalidArgument, match="invalid filter 'all=yes'"):
        svc.prune({"all": ["yes"]})


def test_persistence_across_instances(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    first = VolumeService(root, durable=True)
    first.create("kept", labels={"a": "b"}, driver_opts={"type": "tmpfs"})
    anon = first.create()
    record = json.loads((root / "kept" / "volume.json").read_text())
    assert record["labels"] == {"a": "b"} and record["filled"] is False
    # a volume directory without a record (an older pydeskd) is adopted; trash is cleaned
    (root / "legacy" / "_data").mkdir(parents=True)
    (root / ".trash-old-1234" / "_data").mkdir(parents=True)
    (root / "not a volume").mkdir()
    second = VolumeService(root)
    assert [v["Name"] for v in second.list()] == sorted(["kept", anon.name, "legacy"])
    assert second.get("kept") == first.get("kept")
    assert second.get(anon.name).anonymous
    assert not (root / ".trash-old-1234").exists()
    second.remove("kept")
    assert not (root / "kept").exists()
    assert "kept" not in [v["Name"] for v in VolumeService(root).list()]


def test_release_removes_anonymous_volumes_only_when_unused(svc: VolumeService) -> None:
    users: dict[str, list[str]] = {}
    svc.set_users(lambda: users)
    anon = svc.get_or_create("a" * 64, anonymous=True, ref="c1").parent.name
    shared = svc.get_or_create("b" * 64, anonymous=True, ref="c1").parent.name
    svc.get_or_create("named", ref="c1")
    users[shared] = ["c2"]                   # another container uses it too
    svc.release("c1", [anon, shared, "named"])
    assert sorted(v["Name"] for v in svc.list()) == sorted([shared, "named"])


def test_mount_events_and_tmpfs_volumes(tmp_path: Path, events: Events) -> None:
    mounter = Mounter()
    svc = VolumeService(tmp_path / "volumes", events, durable=False,
                        mounter=mounter)  # type: ignore[arg-type]
    svc.create("tmp", driver_opts={"type": "tmpfs", "o": "size=1m"})
    svc.create("disk")
    target = str(svc.mountpoint("tmp"))
    svc.mounted("c1", [Mount("tmp", "/t"), Mount("disk", "/d", read_only=True),
                       Mount("", "/b", type="bind")])
    svc.mounted("c2", [Mount("tmp", "/t")])   # already mounted: not again
    assert mounter.calls == [("mount", "tmpfs", target, "size=1m")]
    svc.unmounted("c1")
    assert len(mounter.calls) == 1             # c2 still uses it
    svc.unmounted("c2")
    svc.unmounted("c2")                         # nothing recorded: no second event
    assert mounter.calls[1] == ("umount", target)
    mounts = [(a, actor, attrs) for _, a, actor, attrs in events.seen if a.endswith("mount")]
    assert mounts[:2] == [
        ("mount", "tmp", {"container": "c1", "destination": "/t", "driver": "local",
                          "propagation": "", "read/write": "true"}),
        ("mount", "disk", {"container": "c1", "destination": "/d", "driver": "local",
                           "propagation": "", "read/write": "false"})]
    assert [(a, actor) for a, actor, _ in mounts[2:]] == [
        ("mount", "tmp"), ("unmount", "tmp"), ("unmount", "disk"), ("unmount", "tmp")]


def test_adopted_runs_unmount_at_their_exit(tmp_path: Path, events: Events) -> None:
    mounter = Mounter()
    svc = VolumeService(tmp_path / "volumes", events, durable=False,
                        mounter=mounter)  # type: ignore[arg-type]
    svc.create("tmp", driver_opts={"type": "tmpfs"})
    svc.adopt("c1", [Mount("tmp", "/t")])      # found running again after a restart
    svc.adopt("c1", [Mount("tmp", "/t")])      # once only
    svc.mounted("c2", [Mount("tmp", "/t")])    # still mounted: not mounted again
    assert mounter.calls == []
    svc.unmounted("c1")
    assert mounter.calls == []
    svc.unmounted("c2")
    assert mounter.calls == [("umount", str(svc.mountpoint("tmp")))]
    assert [a for _, a, _, _ in events.seen if a.endswith("mount")] == \
        ["mount", "unmount", "unmount"]
