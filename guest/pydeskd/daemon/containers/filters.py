"""``docker ps`` filters, limit, before/since, as Docker applies them (moby's daemon/list.go).

Values of one key are alternatives (OR), keys combine with AND. Keys: ``status``, ``label``
(``k`` or ``k=v``), ``name`` and ``id`` (regular expressions searched in the name / ID),
``ancestor`` (image name or ID: the caller resolves it to image IDs), ``exited`` (exit codes of
containers that ran), ``before``/``since`` (a container; compared by creation time). A
``status`` or ``exited`` filter, or a limit, lists stopped containers without ``all``.

Pure: the caller passes the records and resolvers; no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pydeskd.containerd.errors import InvalidArgument

from .record import Container
from .state import Status
from .timeutil import parse_rfc3339_ns

KNOWN = frozenset({"status", "label", "name", "id", "ancestor", "exited", "before", "since",
                   "health", "volume", "network", "is-task", "publish", "expose"})
STATUSES = frozenset(s.value for s in Status)

Filters = Mapping[str, Iterable[str]]


@dataclass(frozen=True)
class ListOptions:
    all: bool = False
    limit: int = -1
    filters: Mapping[str, Sequence[str]] | None = None


def _created(c: Container) -> int:
    try:
        return parse_rfc3339_ns(c.created)
    except ValueError:
        return 0


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text


def select(containers: Iterable[Container], options: ListOptions,
           lookup: Callable[[str], Container],
           ancestor_ids: Callable[[str], set[str]]) -> list[Container]:
    """The containers ``docker ps`` shows, newest first. ``lookup`` resolves before/since
    (raises NotFound), ``ancestor_ids`` an image reference to image IDs (empty if none).
    Raises InvalidArgument for an unknown filter or a bad value, as Docker."""
    filters = {k: list(v) for k, v in (options.filters or {}).items()}
    for key, values in filters.items():
        if key not in KNOWN:
            raise InvalidArgument(f"invalid filter '{key}'")
        if key == "status":
            for value in values:
                if value not in STATUSES:
                    raise InvalidArgument(f"invalid filter 'status={value}'")
        if key == "exited":
            for value in values:
                if not re.fullmatch(r"-?\d+", value):
                    raise InvalidArgument(f"invalid filter 'exited={value}'")
    show_all = options.all or options.limit > 0 or "status" in filters or "exited" in filters
    before = [lookup(v) for v in filters.get("before", [])]
    since = [lookup(v) for v in filters.get("since", [])]
    ancestors: set[str] | None = None
    if "ancestor" in filters:
        ancestors = set()
        for value in filters["ancestor"]:
            ancestors |= ancestor_ids(value)
    ordered = sorted(containers, key=_created, reverse=True)
    out: list[Container] = []
    for c in ordered:
        state = c.state
        if not show_all and not state.running:
            continue
        if before and not any(_created(c) < _created(b) and c.id != b.id for b in before):
            continue
        if since and not any(_created(c) > _created(s) and c.id != s.id for s in since):
            continue
        if "status" in filters and str(state.status) not in filters["status"]:
            continue
        if "name" in filters and not any(_search(v, c.name) or _search(v, c.name[1:])
                                         for v in filters["name"]):
            continue
        if "id" in filters and not any(_search(v, c.id) for v in filters["id"]):
            continue
        if "label" in filters and not all(_label_matches(c.labels, v)
                                          for v in filters["label"]):
            continue
        if "exited" in filters and (state.running or not c.has_been_started or str(
                state.exit_code) not in {str(int(v)) for v in filters["exited"]}):
            continue
        if ancestors is not None and c.image not in ancestors:
            continue
        if "health" in filters:
            health = (state.health or {}).get("Status", "none")
            if health not in filters["health"]:
                continue
        out.append(c)
        if 0 < options.limit <= len(out):
            break
    return out


def _label_matches(labels: Mapping[str, str], wanted: str) -> bool:
    """Docker's label filters: ``key`` (present), ``key=value``; several are all required."""
    key, sep, value = wanted.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value
