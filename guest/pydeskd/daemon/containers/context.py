"""What the container service is made of besides its records: where things go on disk
(:class:`ServicePaths`, every path of a container named in one place), what only the running
daemon knows about a container (:class:`Live`), the event sink it reports to, and the parsing
of log options. Pure: names and small data only, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.containers.restart import RestartManager
from pydeskd.shim.client import ShimClient
from pydeskd.shim.runtime import default_runtime


class EventPublisher(Protocol):
    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> Any: ...


@dataclass(frozen=True)
class ServicePaths:
    data_root: Path                    # containers/<id>/ records, logs, /etc files
    exec_root: Path                    # containers/<id>/ bundles, s/<id> shim state
    runtime: Path | None = None        # pydesk-runc (default), runc or crun
    runtime_root: Path | None = None   # the runtime's --root; default <exec-root>/runtime
    cgroup_parent: str = "/pydesk"
    init_path: Path | None = None      # the static init --init runs as PID 1 (tini)
    durable: bool = True               # fsync records (tests may turn it off)

    @property
    def containers(self) -> Path:
        return self.data_root / "containers"

    def bundle(self, cid: str) -> Path:
        return self.exec_root / "containers" / cid

    def rootfs(self, cid: str) -> Path:
        return self.bundle(cid) / "rootfs"

    def shim_state(self, cid: str) -> Path:
        return self.exec_root / "s" / cid

    @property
    def runtime_state(self) -> Path:
        return self.runtime_root or self.exec_root / "runtime"

    @property
    def runtime_path(self) -> Path:
        return self.runtime or default_runtime()

    def cgroups_path(self, cid: str) -> str:
        return f"{self.cgroup_parent.rstrip('/')}/{cid}"


@dataclass
class Live:
    """What only the running daemon knows about a container (rebuilt by ``restore``)."""

    restart: RestartManager
    shim: ShimClient | None = None
    generation: int = 0        # bumped per start: a monitor of an older run does nothing
    started_mono: float = 0.0
    exits: int = 0             # exits recorded since the daemon started (wait next-exit)
    removed: bool = False
    attach_pending: int = 0    # attachers connecting to a shim that has not started yet
    monitors: list[threading.Thread] = field(default_factory=list)
    prober: Any = None         # health.Prober of the current run, if it has a healthcheck

    def stop_prober(self) -> None:
        if self.prober is not None:
            self.prober.stop.set()
            self.prober = None


def api_json(obj: Any) -> dict[str, Any]:
    """The Docker JSON of a Config/HostConfig (H2's typed objects have ``to_api``)."""
    if obj is None:
        return {}
    to_api = getattr(obj, "to_api", None)
    if callable(to_api):
        out: dict[str, Any] = to_api()
        return out
    return dict(obj)


def parse_size(text: str) -> int:
    """Docker's RAMInBytes for log options: ``10m``, ``1g``, ``512k``, ``100``."""
    value = text.strip().lower().rstrip("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if value and value[-1] in units:
            return int(float(value[:-1]) * units[value[-1]])
        return int(value)
    except ValueError:
        raise InvalidArgument(f"invalid size: '{text}'") from None
