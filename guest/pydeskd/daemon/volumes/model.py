"""A volume's record and its Engine API JSON; Docker's name and driver-option rules.

What it is for: :class:`Volume` is what the store persists (``volume.json``) and what inspect,
list and ``system df`` show (``to_api``). Names follow the local driver's rule
(``[a-zA-Z0-9][a-zA-Z0-9_.-]+``, so at least two characters); anonymous volumes get 64 hex
digits and the ``com.docker.volume.anonymous`` label, as Docker 23+ marks them (``volume prune``
removes only those unless ``all=true``).

What it must never do: I/O.
"""

from __future__ import annotations

import datetime
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydeskd.containerd.errors import InvalidArgument

ANONYMOUS_LABEL = "com.docker.volume.anonymous"
LOCAL = "local"
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# The local driver's options. Only ``type=tmpfs`` (with ``o`` tmpfs options) is served; device
# and bind mounts need a mount helper that runs as the volume's lifecycle, which pydeskd does
# not have yet: those are refused at create with a clear message.
DRIVER_OPTIONS = frozenset({"type", "device", "o", "size"})


def validate_name(name: str) -> str:
    """Raises InvalidArgument with Docker's message."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            f'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            f'directory, use absolute path')
    return name


def anonymous_name() -> str:
    return secrets.token_hex(32)


def validate_options(driver: str, options: Mapping[str, str]) -> dict[str, str]:
    """The driver options a local volume may be created with. Raises InvalidArgument."""
    if driver != LOCAL:
        raise InvalidArgument(f'create: plugin "{driver}" not found: only the "local" volume '
                              f'driver is available')
    opts = {str(k): str(v) for k, v in options.items()}
    for key in opts:
        if key not in DRIVER_OPTIONS:
            raise InvalidArgument(f"invalid option: {key!r}")
    kind = opts.get("type", "")
    if not opts:
        return opts
    if kind != "tmpfs" or opts.get("device", "tmpfs") != "tmpfs":
        raise InvalidArgument(
            "local volume options: only type=tmpfs is supported by pydeskd (device and bind "
            "mounts through volume options are not); use a bind mount (-v /host/dir:/dir) "
            "instead")
    for word in filter(None, opts.get("o", "").split(",")):
        key = word.partition("=")[0]
        if key not in ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks"):
            raise InvalidArgument(f"invalid tmpfs option for a local volume: {word!r}")
    return opts


def rfc3339_now() -> str:
    """Docker's volume CreatedAt: RFC 3339 with seconds and the zone (UTC here)."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Volume:
    name: str
    created_at: str
    driver: str = LOCAL
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    # Content was copied into it from an image once: it is never filled again (see fill.py).
    filled: bool = False

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    @property
    def tmpfs(self) -> bool:
        return self.options.get("type") == "tmpfs"

    def with_filled(self) -> Volume:
        return replace(self, filled=True)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at, "driver": self.driver,
                "labels": dict(self.labels), "options": dict(self.options),
                "filled": self.filled}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Volume:
        return cls(name=str(obj["name"]), created_at=str(obj.get("created_at") or ""),
                   driver=str(obj.get("driver") or LOCAL),
                   labels={str(k): str(v) for k, v in (obj.get("labels") or {}).items()},
                   options={str(k): str(v) for k, v in (obj.get("options") or {}).items()},
                   filled=bool(obj.get("filled")))

    def to_api(self, mountpoint: str, usage: tuple[int, int] | None = None) -> dict[str, Any]:
        """Docker's ``Volume`` (``usage``: (size, refcount) for ``UsageData``)."""
        out: dict[str, Any] = {
            "CreatedAt": self.created_at, "Driver": self.driver,
            "Labels": dict(self.labels), "Mountpoint": mountpoint, "Name": self.name,
            "Options": dict(self.options), "Scope": "local",
        }
        if usage is not None:
            out["UsageData"] = {"Size": usage[0], "RefCount": usage[1]}
        return out
