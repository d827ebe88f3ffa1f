"""EventBus: Docker's message shape, filters, since/until, thread-safe publish, live feeds."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.events import Event, EventBus, EventFilter, parse_timestamp


def ev(type: str, action: str, actor: str, **attrs: str) -> Event:
    return Event(type, action, actor, attrs, 1)


CONTAINER = ev("container", "start", "abc123", name="web", image="busybox:latest",
               maintainer="me")
IMAGE = ev("image", "pull", "sha256:1234", name="busybox:latest")
VOLUME = ev("volume", "create", "data", driver="local")
EXEC = ev("container", "exec_start: sh -c true", "abc123", name="web", image="busybox")


@pytest.mark.parametrize(("filters", "matching"), [
    ({}, {"c", "i", "v", "x"}),
    ({"type": ["container"]}, {"c", "x"}),
    ({"type": ["image", "volume"]}, {"i", "v"}),
    ({"event": ["start"]}, {"c"}),
    ({"event": ["exec_start"]}, {"x"}),
    ({"container": ["web"]}, {"c", "x"}),
    ({"container": ["abc"]}, {"c", "x"}),  # ID prefix
    ({"container": ["other"]}, set()),
    ({"image": ["busybox"]}, {"c", "i", "x"}),
    ({"image": ["busybox:latest"]}, {"c", "i"}),
    ({"label": ["maintainer"]}, {"c"}),
    ({"label": ["maintainer=me"]}, {"c"}),
    ({"label": ["maintainer=you"]}, set()),
    ({"volume": ["data"]}, {"v"}),
    ({"type": ["container"], "event": ["start", "die"]}, {"c"}),
])
def test_filters(filters: dict[str, list[str]], matching: set[str]) -> None:
    flt = EventFilter.parse(filters)
    named = {"c": CONTAINER, "i": IMAGE, "v": VOLUME, "x": EXEC}
    assert {k for k, e in named.items() if flt.matches(e)} == matching


def test_unknown_filter_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        EventFilter.parse({"colour": ["red"]})


def test_message_shape() -> None:
    assert CONTAINER.to_json()["from"] == "busybox:latest"
    assert IMAGE.to_json()["status"] == "pull" and "from" not in IMAGE.to_json()
    assert "id" not in VOLUME.to_json()
    assert set(VOLUME.to_json()) == {"Type", "Action", "Actor", "scope", "time", "timeNano"}


@pytest.mark.parametrize(("text", "nanos"), [
    ("1700000000", 1_700_000_000_000_000_000),
    ("1700000000.000000001", 1_700_000_000_000_000_001),
    ("1700000000.5", 1_700_000_000_500_000_000),
])
def test_parse_timestamp(text: str, nanos: int) -> None:
    assert parse_timestamp(text) == nanos


@pytest.mark.parametrize("text", ["", "soon", "1.2.3", "1.x"])
def test_parse_timestamp_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_timestamp(text)


def test_history_since_until_and_ring_buffer() -> None:
    bus = EventBus(buffer_size=3)
    events = [bus.publish("container", f"a{i}", "c") for i in range(5)]
    times = [e.time_nano for e in events]
    assert times == sorted(set(times))  # strictly increasing
    assert [e.action for e in bus.history()] == ["a2", "a3", "a4"]
    assert [e.action for e in bus.history(since=times[3])] == ["a3", "a4"]
    assert [e.action for e in bus.history(until=times[3])] == ["a2", "a3"]


def test_subscribe_replays_then_feeds_live_from_other_threads() -> None:
    bus = EventBus()
    before = bus.publish("container", "create", "c1")

    async def scenario() -> list[str]:
        past, sub = bus.subscribe(EventFilter.parse({"type": ["container"]}),
                                  since=before.time_nano)
        threads = [threading.Thread(target=bus.publish, args=(kind, f"t{i}", "x"))
                   for i, kind in enumerate(["container", "image", "container"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [e.action for e in past]
        got.append((await asyncio.wait_for(sub.get(), 2)).action)
        got.append((await asyncio.wait_for(sub.get(), 2)).action)
        sub.close()
        assert bus.subscriber_count == 0
        return got

    got = asyncio.run(scenario())
    assert got[0] == "create" and sorted(got[1:]) == ["t0", "t2"]


def test_subscribe_without_since_replays_nothing() -> None:
    bus = EventBus()
    bus.publish("container", "create", "c1")

    async def scenario() -> int:
        past, sub = bus.subscribe()
        sub.close()
        return len(past)

    assert asyncio.run(scenario()) == 0


def test_close_ends_live_feeds() -> None:
    bus = EventBus()

    async def scenario() -> list[object]:
        _, sub = bus.subscribe()
        bus.publish("image", "tag", "x")
        bus.close()
        got: list[object] = [e.action async for e in sub]
        assert bus.subscriber_count == 0
        return got

    assert asyncio.run(scenario()) == ["tag"]
