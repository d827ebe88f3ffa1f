"""The forwarder's memory: ``~/.pydesk/<name>/forwards.json``.

What it is for: the forwards this module made (so a new agent removes only its own stale rules,
never the agent's SSH forward or anything else on the netdev), the ones that failed and why, and
the bindings that cannot be forwarded. ``pydesk port`` and ``pydesk doctor`` read its
``forwards`` list (every wanted forward, ``error`` set on the failed ones) or use
:func:`load_state`. Written atomically (temporary file, fsync, rename).
What it must never do: be the truth about what QEMU has (``info usernet`` is); a lost or broken
file only means stale rules of a previous agent stay until QEMU stops.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydesk.forward.desired import Forward
from pydesk.vm.instance import write_private

STATE_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailedForward:
    forward: Forward
    error: str
    """``host port 8080 is already in use``."""
    hint: str = ""

    def message(self) -> str:
        """``host port 8080 is already in use: container web's 80/tcp is not reachable from
        the host``."""
        return f"{self.error}: {self.who()} is not reachable from the host"

    def who(self) -> str:
        f = self.forward
        return (f"container {f.container}'s {f.container_port}" if f.container
                else f"guest port {f.guest_port}/{f.proto}")

    def to_json(self) -> dict[str, Any]:
        return {**self.forward.to_json(), "error": self.error, "hint": self.hint}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FailedForward:
        return cls(Forward.from_json(data), str(data.get("error", "")), str(data.get("hint", "")))


@dataclass(frozen=True)
class ForwardState:
    made: frozenset[Forward] = frozenset()
    """Rules this module added and that QEMU had at the last reconcile."""
    failed: tuple[FailedForward, ...] = ()
    warnings: tuple[str, ...] = ()
    wanted: frozenset[Forward] = field(default=frozenset())
    """Every forward the guest's containers asked for at the last reconcile."""

    def entries(self) -> list[dict[str, Any]]:
        """Every wanted forward with ``error`` ("" when it is forwarded) and ``hint``: the
        ``forwards`` list that ``pydesk port`` and ``pydesk doctor`` read."""
        failed = {f.forward: f for f in self.failed}
        out = []
        for f in sorted(self.wanted | set(failed), key=_order):
            problem = failed.get(f)
            out.append({**(problem.forward if problem else f).to_json(),
                        "error": problem.error if problem else "",
                        "hint": problem.hint if problem else ""})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "forwards": self.entries(),
                "made": [f.to_json() for f in sorted(self.made, key=_order)],
                "failed": [f.to_json() for f in
                           sorted(self.failed, key=lambda x: _order(x.forward))],
                "warnings": list(self.warnings),
                "wanted": [f.to_json() for f in sorted(self.wanted, key=_order)]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ForwardState:
        return cls(frozenset(Forward.from_json(f) for f in data.get("made", [])),
                   tuple(FailedForward.from_json(f) for f in data.get("failed", [])),
                   tuple(str(w) for w in data.get("warnings", [])),
                   frozenset(Forward.from_json(f) for f in data.get("wanted", [])))


def _order(f: Forward) -> tuple[int, str, str]:
    return (f.host_port, str(f.proto), f.host_ip)


def load_state(path: Path) -> ForwardState:
    """The saved state; an empty one when the file is missing or unreadable (logged)."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown format: {str(data)[:60]}")
        return ForwardState.from_json(data)
    except FileNotFoundError:
        return ForwardState()
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring the forward state %s: %s", path, e)
        return ForwardState()


def save_state(path: Path, state: ForwardState) -> None:
    write_private(path, json.dumps(state.to_json(), indent=1).encode() + b"\n", 0o644)
