"""A container's mounts: ``-v``/``Binds``, ``--mount``/``Mounts``, ``--tmpfs``/``Tmpfs`` and
anonymous volumes (``Config.Volumes``), resolved to what is mounted and what inspect shows.

What it is for: turning the API's three mount syntaxes into one list of :class:`Resolved`
mounts (host source, destination, options) plus Docker's ``MountPoint`` JSON. Docker's rules:
``-v /host:/dir`` creates a missing host directory, ``--mount type=bind`` does not (an error);
a name (no leading ``/``) is a named volume, created on first use through the
:class:`VolumeService` hook; a ``Config.Volumes`` entry no other mount covers is an anonymous
volume (64-hex name). The daemon's volumes are :class:`pydeskd.daemon.volumes.VolumeService`
(which also fills new volumes from the image: ``nocopy`` is recorded for it); :class:`LocalVolumes`
is the bare directory-per-volume driver the unit tests use.

What it must never do: mount anything (the runtime does, from the spec), or touch a host path
other than creating a missing ``-v`` bind source.
"""

from __future__ import annotations

import os
import posixpath
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydeskd.containerd.errors import InvalidArgument

PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")


class VolumeService(Protocol):
    def get_or_create(self, name: str, anonymous: bool = False, ref: str = "") -> Path:
        """The host directory of volume ``name``, created if missing (``ref``: the container
        being created, which holds the volume until its record exists)."""
        ...


class LocalVolumes:
    """Docker's local driver at its simplest: a directory per volume."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_or_create(self, name: str, anonymous: bool = False, ref: str = "") -> Path:
        del anonymous, ref
        if "/" in name or name in (".", ".."):
            raise InvalidArgument(f"invalid volume name: {name}")
        path = self.root / name / "_data"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Resolved:
    type: str                 # bind | volume | tmpfs
    destination: str
    source: str = ""          # host path (bind, volume), "tmpfs" for tmpfs
    read_only: bool = False
    name: str = ""            # volume name
    propagation: str = ""
    options: tuple[str, ...] = ()   # extra tmpfs options (size=, mode=)
    mode: str = ""            # the -v mode string, as inspect shows it
    anonymous: bool = False
    nocopy: bool = False      # a new volume is not filled from the image

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "destination": self.destination, "source": self.source,
                "read_only": self.read_only, "name": self.name,
                "propagation": self.propagation, "options": list(self.options),
                "mode": self.mode, "anonymous": self.anonymous, "nocopy": self.nocopy}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Resolved:
        fields = dict(obj)
        fields["options"] = tuple(fields.get("options") or ())
        return cls(**fields)

    def oci(self) -> dict[str, Any]:
        """The config.json mount."""
        if self.type == "tmpfs":
            opts = ["nosuid", "nodev", "noexec", *self.options]
            if self.read_only:
                opts.append("ro")
            return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs",
                    "options": opts}
        opts = ["rbind", self.propagation or "rprivate"]
        opts.append("ro" if self.read_only else "rw")
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": opts}

    def inspect(self) -> dict[str, Any]:
        """Docker's MountPoint."""
        out: dict[str, Any] = {"Type": self.type}
        if self.type == "volume":
            out |= {"Name": self.name, "Source": self.source, "Destination": self.destination,
                    "Driver": "local", "Mode": self.mode or "z", "RW": not self.read_only,
                    "Propagation": ""}
        elif self.type == "bind":
            out |= {"Source": self.source, "Destination": self.destination,
                    "Mode": self.mode, "RW": not self.read_only,
                    "Propagation": self.propagation or "rprivate"}
        else:
            out |= {"Source": "", "Destination": self.destination, "Mode": self.mode,
                    "RW": not self.read_only, "Propagation": ""}
        return out


@dataclass
class MountPlan:
    mounts: list[Resolved] = field(default_factory=list)

    def destinations(self) -> set[str]:
        return {m.destination for m in self.mounts}

    def add(self, mount: Resolved) -> None:
        if mount.destination in self.destinations():
            raise InvalidArgument(f"Duplicate mount point: {mount.destination}")
        self.mounts.append(mount)


def _clean_destination(dest: str) -> str:
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid mount config: mount path must be absolute: {dest}")
    return posixpath.normpath(dest)


def parse_bind(spec: str) -> tuple[str, str, str]:
    """``src:dst[:mode]`` -> (src, dst, mode). Raises InvalidArgument as Docker."""
    parts = spec.split(":")
    if len(parts) == 2:
        return parts[0], parts[1], ""
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 1:
        return "", parts[0], ""
    raise InvalidArgument(f"invalid volume specification: '{spec}'")


def _mode_flags(mode: str, spec: str) -> tuple[bool, str, bool]:
    """(read_only, propagation, nocopy) from a -v mode string."""
    read_only, propagation, nocopy = False, "", False
    for word in filter(None, mode.split(",")):
        if word in ("ro", "rw"):
            read_only = word == "ro"
        elif word in PROPAGATIONS:
            propagation = word
        elif word in ("z", "Z", "nocopy", "consistent", "cached", "delegated"):
            nocopy = nocopy or word == "nocopy"
        else:
            raise InvalidArgument(f"invalid mode: {mode}")
    del spec
    return read_only, propagation, nocopy


def resolve(config: Mapping[str, Any], host_config: Mapping[str, Any],
            volumes: VolumeService, new_name: Callable[[], str] = lambda: secrets.token_hex(32),
            ref: str = "") -> MountPlan:
    """The mounts of a container to create. Raises InvalidArgument with Docker's messages."""
    plan = MountPlan()
    for spec in host_config.get("Binds") or []:
        src, dst, mode = parse_bind(spec)
        if not src:
            raise InvalidArgument(f"invalid volume specification: '{spec}'")
        dest = _clean_destination(dst)
        read_only, propagation, nocopy = _mode_flags(mode, spec)
        if src.startswith("/"):
            # Docker creates a missing -v source (a directory), unlike --mount.
            os.makedirs(src, exist_ok=True)
            plan.add(Resolved("bind", dest, posixpath.normpath(src), read_only,
                              propagation=propagation, mode=mode))
        else:
            path = volumes.get_or_create(src, ref=ref)
            plan.add(Resolved("volume", dest, str(path), read_only, name=src, mode=mode,
                              nocopy=nocopy))
    for mount in host_config.get("Mounts") or []:
        plan.add(_from_mount(mount, volumes, new_name, ref))
    for dst, opts in (host_config.get("Tmpfs") or {}).items():
        plan.add(_tmpfs(dst, str(opts or "")))
    for dst in (config.get("Volumes") or {}):
        dest = _clean_destination(dst)
        if dest in plan.destinations():
            continue
        name = new_name()
        plan.add(Resolved("volume", dest, str(volumes.get_or_create(name, True, ref)),
                          name=name, anonymous=True))
    return plan


def _tmpfs(dst: str, opts: str) -> Resolved:
    dest = _clean_destination(dst)
    read_only = False
    extra: list[str] = []
    for word in filter(None, opts.split(",")):
        if word == "ro":
            read_only = True
        elif word != "rw":
            extra.append(word)
    return Resolved("tmpfs", dest, "tmpfs", read_only, options=tuple(extra), mode=opts)


def _from_mount(mount: Mapping[str, Any], volumes: VolumeService,
                new_name: Callable[[], str], ref: str = "") -> Resolved:
    kind = mount.get("Type") or ""
    target = mount.get("Target") or ""
    if not target:
        raise InvalidArgument("invalid mount config: Target must not be empty")
    dest = _clean_destination(target)
    read_only = bool(mount.get("ReadOnly"))
    source = mount.get("Source") or ""
    if kind == "bind":
        if not source:
            raise InvalidArgument('invalid mount config for type "bind": field Source '
                                  'must not be empty')
        if not os.path.exists(source):
            raise InvalidArgument(f'invalid mount config for type "bind": bind source path '
                                  f'does not exist: {source}')
        propagation = (mount.get("BindOptions") or {}).get("Propagation") or ""
        return Resolved("bind", dest, posixpath.normpath(source), read_only,
                        propagation=propagation)
    if kind == "volume":
        name = source or new_name()
        nocopy = bool((mount.get("VolumeOptions") or {}).get("NoCopy"))
        return Resolved("volume", dest, str(volumes.get_or_create(name, not source, ref)),
                        read_only, name=name, anonymous=not source, nocopy=nocopy)
    if kind == "tmpfs":
        if source:
            raise InvalidArgument('invalid mount config for type "tmpfs": field Source '
                                  'must not be specified')
        options = mount.get("TmpfsOptions") or {}
        extra: list[str] = []
        if options.get("SizeBytes"):
            extra.append(f"size={int(options['SizeBytes'])}")
        if options.get("Mode"):
            extra.append(f"mode={int(options['Mode']):o}")
        return Resolved("tmpfs", dest, "tmpfs", read_only, options=tuple(extra))
    raise InvalidArgument(f"invalid mount config: mount type unknown: {kind!r}")
