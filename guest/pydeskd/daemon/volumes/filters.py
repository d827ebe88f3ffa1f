"""``docker volume ls`` and ``docker volume prune`` filters, as moby's volume service reads them.

What it is for: each key's values are alternatives (OR), keys combine (AND). ``name`` and
``driver`` are regular expressions searched in the value (moby's ``filters.Match``), ``label``
is ``key`` or ``key=value``, ``dangling`` is a boolean (no container references the volume).
Prune takes ``label``, ``label!`` and ``all`` (API 1.42+: without ``all=true`` only anonymous
volumes are pruned).

What it must never do: I/O; an unknown key or a bad boolean is InvalidArgument (HTTP 400).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.volumes.model import Volume

LIST_KEYS = frozenset({"name", "label", "dangling", "driver"})
PRUNE_KEYS = frozenset({"label", "label!", "all"})
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def check_keys(filters: Mapping[str, Sequence[str]], allowed: frozenset[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")


def boolean(filters: Mapping[str, Sequence[str]], key: str) -> bool | None:
    """The filter's boolean value (None when absent). Raises InvalidArgument."""
    values = filters.get(key) or ()
    result: bool | None = None
    for value in values:
        low = value.lower()
        if low in _TRUE:
            result = True
        elif low in _FALSE:
            result = False if result is None else result
        else:
            raise InvalidArgument(f"invalid filter '{key}={value}'")
    return result


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text


def has_label(labels: Mapping[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def matches_list(volume: Volume, filters: Mapping[str, Sequence[str]], in_use: bool) -> bool:
    """Does ``volume`` pass ``docker volume ls``'s filters?"""
    names = filters.get("name") or ()
    if names and not any(_search(p, volume.name) for p in names):
        return False
    drivers = filters.get("driver") or ()
    if drivers and not any(_search(p, volume.driver) for p in drivers):
        return False
    labels = filters.get("label") or ()
    if labels and not all(has_label(volume.labels, spec) for spec in labels):
        return False
    dangling = boolean(filters, "dangling")
    return not (dangling is not None and dangling == in_use)


def matches_prune(volume: Volume, filters: Mapping[str, Sequence[str]],
                  all_volumes: bool) -> bool:
    """Is ``volume`` (unused) chosen by ``docker volume prune``'s filters?"""
    if not all_volumes and not volume.anonymous:
        return False
    labels = filters.get("label") or ()
    if labels and not all(has_label(volume.labels, spec) for spec in labels):
        return False
    excluded = filters.get("label!") or ()
    return not any(has_label(volume.labels, spec) for spec in excluded)
