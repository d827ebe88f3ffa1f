"""Names, IDs and the lookup rules of the container store (Docker's), plus persistence."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.daemon.containers.errors import Conflict
from pydeskd.daemon.containers.names import generate_name, new_id, validate_name
from pydeskd.daemon.containers.record import Container
from pydeskd.daemon.containers.state import Status
from pydeskd.daemon.containers.store import CONFIG_FILE, QUARANTINE, ContainerStore


def make(cid: str, name: str) -> Container:
    return Container(id=cid, name=name, created="2026-01-01T00:00:00Z", path="sh", args=["-c"],
                     config={"Image": "busybox", "Labels": {"a": "1"}}, host_config={},
                     image="sha256:" + "0" * 64, image_name="busybox")


def test_new_id_is_64_hex_and_short_form_not_numeric() -> None:
    tokens = iter(["1" * 64, "ab" * 32])
    assert new_id(lambda n: next(tokens)) == "ab" * 32
    cid = new_id()
    assert len(cid) == 64 and int(cid, 16) >= 0


@pytest.mark.parametrize("name", ["a", "-x", "_x", "a b", "a/b", "", "/"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="Invalid container name"):
        validate_name(name)


@pytest.mark.parametrize("name", ["ab", "web_1", "a.b-c", "/web", "A9"])
def test_valid_names_stored_with_slash(name: str) -> None:
    assert validate_name(name) == "/" + name.lstrip("/")


def test_generated_names() -> None:
    rng = random.Random(1)
    name = generate_name(rng=rng)
    assert "_" in name and validate_name(name) == "/" + name
    assert generate_name(retry=1, rng=rng)[-1].isdigit()


def test_lookup_by_id_name_and_prefix(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path, durable=False)
    a = make("abc" + "1" * 61, store.reserve_name("web", "abc" + "1" * 61))
    b = make("abd" + "2" * 61, store.reserve_name("db", "abd" + "2" * 61))
    store.add(a)
    store.add(b)
    assert store.get(a.id) is a
    assert store.get("web") is a and store.get("/web") is a
    assert store.get("abc") is a
    with pytest.raises(InvalidArgument, match="multiple IDs found with provided prefix: ab"):
        store.get("ab")
    with pytest.raises(NotFound, match="No such container: nope"):
        store.get("nope")
    with pytest.raises(NotFound):
        store.get("/abc")  # a "/" form is a name only


def test_name_beats_prefix(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path, durable=False)
    a = make("dead" + "1" * 60, store.reserve_name("other", "dead" + "1" * 60))
    b = make("beef" + "2" * 60, store.reserve_name("dead", "beef" + "2" * 60))
    store.add(a)
    store.add(b)
    assert store.get("dead") is b


def test_name_conflict_and_rename(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path, durable=False)
    a = make("a" * 64, store.reserve_name("web", "a" * 64))
    store.add(a)
    with pytest.raises(Conflict, match='The container name "/web" is already in use by '
                                       'container "' + "a" * 64):
        store.reserve_name("web", "b" * 64)
    store.rename(a, "api")
    assert store.get("api") is a and a.name == "/api"
    assert store.reserve_name("web", "b" * 64) == "/web"  # the old name is free again
    saved = json.loads((tmp_path / a.id / CONFIG_FILE).read_text())
    assert saved["name"] == "/api"


def test_parallel_reservations_one_wins(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path, durable=False)
    wins: list[str] = []
    errors: list[Exception] = []

    def take(n: int) -> None:
        try:
            store.reserve_name("same", f"{n:064x}")
            wins.append(f"{n:064x}")
        except Conflict as e:
            errors.append(e)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(errors) == 15


def test_round_trip_and_load(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    a = make("c" * 64, store.reserve_name("x1", "c" * 64))
    a.state.set_running(42)
    a.state.set_stopped(3)
    store.add(a)
    (tmp_path / ("d" * 64)).mkdir()  # a create that crashed before its first write
    again = ContainerStore(tmp_path)
    loaded = again.load()
    assert [c.id for c in loaded] == [a.id]
    got = again.get("x1")
    assert got.state.status is Status.EXITED and got.state.exit_code == 3
    assert got.to_json() == a.to_json()
    assert not (tmp_path / ("d" * 64)).exists()
    again.delete(got)
    assert not (tmp_path / a.id).exists()
    with pytest.raises(NotFound):
        again.get("x1")


@pytest.mark.parametrize("damage", [b"{not json", b'{"Id": 5}', b"[]", b"\xff\xfe"])
def test_an_unreadable_record_is_moved_aside_not_deleted(tmp_path: Path, damage: bytes) -> None:
    store = ContainerStore(tmp_path)
    good = make("a" * 64, store.reserve_name("good", "a" * 64))
    store.add(good)
    bad_dir = tmp_path / ("b" * 64)
    bad_dir.mkdir()
    (bad_dir / CONFIG_FILE).write_bytes(damage)
    (bad_dir / "hostname").write_text("kept\n")
    loaded = ContainerStore(tmp_path).load()
    assert [c.id for c in loaded] == [good.id]
    assert not bad_dir.exists()
    (aside,) = (tmp_path / QUARANTINE).iterdir()
    assert aside.name.startswith("b" * 64)
    assert (aside / CONFIG_FILE).read_bytes() == damage
    assert (aside / "hostname").read_text() == "kept\n"
    # The quarantine is not a container: a later load leaves it alone.
    assert [c.id for c in ContainerStore(tmp_path).load()] == [good.id]
    assert (aside / CONFIG_FILE).exists()


def test_inspect_shape(tmp_path: Path) -> None:
    a = make("e" * 64, "/insp")
    out = a.to_inspect()
    assert out["Id"] == a.id and out["Name"] == "/insp"
    assert out["State"]["Status"] == "created" and out["State"]["StartedAt"].startswith("0001")
    assert out["Config"]["Labels"] == {"a": "1"}
    assert out["ExecIDs"] is None and out["Path"] == "sh" and out["Args"] == ["-c"]
