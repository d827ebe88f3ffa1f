"""The daemon's event bus: Docker's ``/events`` messages, a ring buffer for ``since``, live feeds.

What it is for: containers, images and volumes report what happened
(``bus.publish("container", "start", cid, {"name": ..., "image": ...})``) from whatever thread
they run in; ``docker events`` / docker-py ``events()`` read them back with since/until/filters.
Each message is built here in Docker's JSON shape (``Type``, ``Action``, ``Actor{ID,
Attributes}``, ``scope``, ``time``, ``timeNano``, and the legacy ``status``/``id``/``from`` of
container and image events), and the filters follow Docker's (moby ``daemon/events/filter.go``).

What it must never do: block a publisher (a slow subscriber loses its oldest messages, never
holds up a container operation), or deliver one message twice to a subscriber (the replay and
the live feed are cut under one lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydeskd.containerd.errors import InvalidArgument

# moby keeps the last 256 events for ``since``; a busier daemon (20 containers restarting)
# needs more to make ``docker events --since`` useful.
DEFAULT_BUFFER = 1024
# A subscriber that falls this far behind loses its oldest unread events.
SUBSCRIBER_QUEUE = 4096

FILTER_KEYS = frozenset({"type", "event", "container", "image", "label", "volume", "network",
                         "daemon", "scope", "plugin", "node", "service", "secret", "config"})


@dataclass(frozen=True)
class Event:
    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str]
    time_nano: int
    scope: str = "local"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # The pre-1.22 fields, still sent (and read by old scripts) for containers and images.
        if self.type in ("container", "image"):
            out["status"] = self.action
            out["id"] = self.actor_id
            if self.type == "container" and "image" in self.attributes:
                out["from"] = self.attributes["image"]
        out.update({
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": self.scope,
            "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        })
        return out


def parse_timestamp(text: str) -> int:
    """Docker's ``since``/``until`` value as nanoseconds: ``SECONDS[.FRACTION]`` (the docker CLI
    sends ``%d.%09d``; it turns durations and dates into that itself)."""
    text = text.strip()
    seconds, _, fraction = text.partition(".")
    if not seconds.lstrip("-").isdigit() or (fraction and not fraction.isdigit()):
        raise InvalidArgument(f"invalid timestamp {text!r}: want seconds since the epoch")
    return int(seconds) * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


@dataclass(frozen=True)
class EventFilter:
    """Docker's event filters: each key's values are alternatives (OR); keys combine (AND)."""

    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @staticmethod
    def parse(filters: Mapping[str, Sequence[str]]) -> EventFilter:
        unknown = set(filters) - FILTER_KEYS
        if unknown:
            raise InvalidArgument(f"invalid filter '{sorted(unknown)[0]}'")
        return EventFilter({k: tuple(v) for k, v in filters.items() if v})

    def _exact(self, key: str, *values: str) -> bool:
        wanted = self.filters.get(key)
        return wanted is None or any(v in wanted for v in values if v)

    def _fuzzy(self, key: str, *values: str) -> bool:
        wanted = self.filters.get(key)
        return wanted is None or any(v and (v == w or v.startswith(w))
                                     for w in wanted for v in values)

    def _action(self, action: str) -> bool:
        # "exec_start: sh -c true" is matched by the filter "exec_start", as Docker does.
        return self._exact("event", action, action.split(":", 1)[0].strip())

    def _image(self, ev: Event) -> bool:
        name = ev.attributes.get("name" if ev.type == "image" else "image", "")
        return self._exact("image", ev.actor_id, name, _strip_tag(ev.actor_id),
                           _strip_tag(name))

    def _labels(self, attributes: Mapping[str, str]) -> bool:
        for wanted in self.filters.get("label", ()):
            key, sep, value = wanted.partition("=")
            if key not in attributes or (sep and attributes[key] != value):
                return False
        return True

    def _named(self, ev: Event, kind: str) -> bool:
        if kind not in self.filters:
            return True
        return ev.type == kind and self._fuzzy(kind, ev.actor_id, ev.attributes.get("name", ""))

    def matches(self, ev: Event) -> bool:
        return (self._action(ev.action)
                and self._exact("type", ev.type)
                and self._exact("scope", ev.scope)
                and self._named(ev, "container")
                and self._named(ev, "volume")
                and self._named(ev, "network")
                and self._named(ev, "plugin")
                and self._named(ev, "daemon")
                and self._image(ev)
                and self._labels(ev.attributes))


def _strip_tag(name: str) -> str:
    """``busybox:latest`` -> ``busybox``; leaves ``host:5000/busybox`` and digests alone."""
    if "@" in name:
        return name.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


# The marker that ends a feed; never published.
_CLOSED = Event("", "", "", {}, 0)


class Subscription:
    """A live feed of events on one asyncio loop; iterate it, close it when done."""

    def __init__(self, bus: EventBus, loop: asyncio.AbstractEventLoop, flt: EventFilter,
                 ) -> None:
        self._bus = bus
        self._loop = loop
        self.filter = flt
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def _deliver(self, ev: Event) -> None:  # runs on the subscriber's loop
        if self._queue.qsize() >= SUBSCRIBER_QUEUE:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
        self._queue.put_nowait(ev)

    def offer(self, ev: Event) -> None:  # any thread
        if self.filter.matches(ev):
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                self._loop.call_soon_threadsafe(self._deliver, ev)

    async def get(self) -> Event | None:
        """The next event; None once the bus is closed (the daemon is shutting down)."""
        ev = await self._queue.get()
        return None if ev is _CLOSED else ev

    def end(self) -> None:  # any thread
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, _CLOSED)

    def close(self) -> None:
        self._bus._unsubscribe(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (ev := await self.get()) is not None:
            yield ev


class EventBus:
    def __init__(self, buffer_size: int = DEFAULT_BUFFER) -> None:
        self._lock = threading.Lock()
        self._buffer: deque[Event] = deque(maxlen=buffer_size)
        self._subscribers: list[Subscription] = []

    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> Event:
        """Record and deliver one event; safe from any thread, never blocks on subscribers."""
        with self._lock:
            # Strictly increasing times keep ``since``/``until`` cuts unambiguous.
            now = time.time_ns()
            if self._buffer and now <= self._buffer[-1].time_nano:
                now = self._buffer[-1].time_nano + 1
            ev = Event(type, action, actor_id, dict(attributes or {}), now)
            self._buffer.append(ev)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.offer(ev)
        return ev

    def history(self, flt: EventFilter | None = None, since: int | None = None,
                until: int | None = None) -> list[Event]:
        with self._lock:
            return self._select(self._buffer, flt, since, until)

    @staticmethod
    def _select(events: Iterable[Event], flt: EventFilter | None, since: int | None,
                until: int | None) -> list[Event]:
        return [ev for ev in events
                if (since is None or ev.time_nano >= since)
                and (until is None or ev.time_nano <= until)
                and (flt is None or flt.matches(ev))]

    def subscribe(self, flt: EventFilter | None = None, since: int | None = None,
                  until: int | None = None) -> tuple[list[Event], Subscription]:
        """The buffered events since ``since`` (none without it) and a live feed of the ones
        after them, cut under one lock. Call from the loop that will read the feed."""
        flt = flt or EventFilter()
        sub = Subscription(self, asyncio.get_running_loop(), flt)
        with self._lock:
            past = [] if since is None else self._select(self._buffer, flt, since, until)
            self._subscribers.append(sub)
        return past, sub

    def close(self) -> None:
        """End every live feed (shutdown): their readers get None and finish their streams."""
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for sub in subscribers:
            sub.end()

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscribers.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)
