"""``HostConfig.Mounts`` entries (the ``--mount`` form) and Docker's validation of them.

Only decoding and checking live here; resolving a volume name or performing a mount is the
daemon's job (it hands the spec builder resolved ``SpecMount``s).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types._decode import Fields

MOUNT_TYPES = ("bind", "volume", "tmpfs", "image", "npipe", "cluster")
PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
_TMPFS_FLAG_OPTIONS = ("exec", "noexec")


@dataclass(frozen=True)
class BindOptions:
    propagation: str = ""
    non_recursive: bool = False
    create_mountpoint: bool = False
    read_only_non_recursive: bool = False
    read_only_force_recursive: bool = False


@dataclass(frozen=True)
class VolumeOptions:
    no_copy: bool = False
    labels: Mapping[str, str] | None = None
    subpath: str = ""
    driver_name: str = ""
    driver_options: Mapping[str, str] | None = None


@dataclass(frozen=True)
class TmpfsOptions:
    size_bytes: int = 0
    mode: int = 0
    options: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Mount:
    """One ``mount.Mount``; exactly one of the *_options may be set, matching ``type``."""

    type: str = ""
    source: str = ""
    target: str = ""
    read_only: bool = False
    consistency: str = ""
    bind_options: BindOptions | None = None
    volume_options: VolumeOptions | None = None
    tmpfs_options: TmpfsOptions | None = None

    @staticmethod
    def from_fields(f: Fields) -> Mount:
        bind = f.obj("BindOptions", "mount.BindOptions")
        volume = f.obj("VolumeOptions", "mount.VolumeOptions")
        tmpfs = f.obj("TmpfsOptions", "mount.TmpfsOptions")
        return Mount(
            type=f.text("Type"), source=f.text("Source"), target=f.text("Target"),
            read_only=f.flag("ReadOnly"), consistency=f.text("Consistency"),
            bind_options=None if bind is None else BindOptions(
                bind.text("Propagation"), bind.flag("NonRecursive"),
                bind.flag("CreateMountpoint"), bind.flag("ReadOnlyNonRecursive"),
                bind.flag("ReadOnlyForceRecursive")),
            volume_options=None if volume is None else _volume_options(volume),
            tmpfs_options=None if tmpfs is None else _tmpfs_options(tmpfs))

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (("Type", self.type), ("Source", self.source),
                           ("Target", self.target), ("ReadOnly", self.read_only),
                           ("Consistency", self.consistency)):
            if value:
                out[key] = value
        if self.bind_options is not None:
            b = self.bind_options
            out["BindOptions"] = {k: v for k, v in (
                ("Propagation", b.propagation), ("NonRecursive", b.non_recursive),
                ("CreateMountpoint", b.create_mountpoint),
                ("ReadOnlyNonRecursive", b.read_only_non_recursive),
                ("ReadOnlyForceRecursive", b.read_only_force_recursive)) if v}
        if self.volume_options is not None:
            v = self.volume_options
            vol: dict[str, Any] = {}
            if v.no_copy:
                vol["NoCopy"] = True
            if v.labels:
                vol["Labels"] = dict(v.labels)
            if v.subpath:
                vol["Subpath"] = v.subpath
            if v.driver_name or v.driver_options:
                driver: dict[str, Any] = {}
                if v.driver_name:
                    driver["Name"] = v.driver_name
                if v.driver_options:
                    driver["Options"] = dict(v.driver_options)
                vol["DriverConfig"] = driver
            out["VolumeOptions"] = vol
        if self.tmpfs_options is not None:
            t = self.tmpfs_options
            tmp: dict[str, Any] = {}
            if t.size_bytes:
                tmp["SizeBytes"] = t.size_bytes
            if t.mode:
                tmp["Mode"] = t.mode
            if t.options:
                tmp["Options"] = [list(o) for o in t.options]
            out["TmpfsOptions"] = tmp
        return out

    def validate(self, bind_source_exists: Callable[[str], bool] | None = None) -> None:
        """Docker's ValidateMountConfig; ``bind_source_exists`` None skips the host check."""
        try:
            self._validate(bind_source_exists)
        except InvalidArgument as e:
            raise InvalidArgument(f'invalid mount config for type "{self.type}": {e}') from None

    def _validate(self, bind_source_exists: Callable[[str], bool] | None) -> None:
        if self.type != "bind" and self.bind_options is not None:
            raise InvalidArgument("field BindOptions must not be specified")
        if self.type != "volume" and self.volume_options is not None:
            raise InvalidArgument("field VolumeOptions must not be specified")
        if self.type != "tmpfs" and self.tmpfs_options is not None:
            raise InvalidArgument("field TmpfsOptions must not be specified")
        if not self.target:
            raise InvalidArgument("field Target must not be empty")
        if posixpath.normpath(self.target.replace("\\", "/")) in ("/", "//"):
            raise InvalidArgument("invalid specification: destination can't be '/'")
        _absolute(self.target)
        if self.type == "bind":
            if not self.source:
                raise InvalidArgument("field Source must not be empty")
            prop = self.bind_options.propagation if self.bind_options else ""
            if prop and prop not in PROPAGATIONS:
                raise InvalidArgument(f"invalid propagation mode: {prop}")
            _absolute(self.source)
            create = self.bind_options is not None and self.bind_options.create_mountpoint
            if bind_source_exists is not None and not create \
                    and not bind_source_exists(self.source):
                raise InvalidArgument(f"bind source path does not exist: {self.source}")
        elif self.type == "volume":
            subpath = self.volume_options.subpath if self.volume_options else ""
            if subpath:
                if not self.source:
                    raise InvalidArgument("must not set Subpath when using anonymous volumes")
                if not _is_local(subpath):
                    raise InvalidArgument("subpath must be a relative path within the volume")
        elif self.type == "tmpfs":
            if self.source:
                raise InvalidArgument("field Source must not be specified")
            tmpfs_mount_options(self.tmpfs_options, self.read_only)
        else:
            raise InvalidArgument("mount type unknown")


def tmpfs_mount_options(opts: TmpfsOptions | None, read_only: bool) -> list[str]:
    """Docker's ConvertTmpfsOptions: ro, mode=%o, size with the largest exact unit, flags."""
    out = ["ro"] if read_only else []
    if opts is None:
        return out
    if opts.mode:
        out.append(f"mode={opts.mode:o}")
    if opts.size_bytes:
        size, suffix = opts.size_bytes, ""
        for unit, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                size, suffix = size // divisor, unit
                break
        out.append(f"size={size}{suffix}")
    for opt in opts.options:
        if not 1 <= len(opt) <= 2:
            raise InvalidArgument("invalid option array length")
        if opt[0] not in _TMPFS_FLAG_OPTIONS:
            raise InvalidArgument(f"invalid option: {opt[0]}")
        out.append(opt[0] if len(opt) == 1 else f"{opt[0]}={opt[1]}")
    return out


def _absolute(path: str) -> None:
    if not path.replace("\\", "/").startswith("/"):
        raise InvalidArgument(f"invalid mount path: '{path}' mount path must be absolute")


def _is_local(path: str) -> bool:
    """Go's filepath.IsLocal: relative, non-empty, and not escaping with '..'."""
    if not path or path.startswith("/"):
        return False
    clean = posixpath.normpath(path)
    return clean != ".." and not clean.startswith("../")


def _volume_options(f: Fields) -> VolumeOptions:
    driver = f.obj("DriverConfig", "mount.Driver")
    return VolumeOptions(
        no_copy=f.flag("NoCopy"), labels=f.str_map("Labels"), subpath=f.text("Subpath"),
        driver_name="" if driver is None else driver.text("Name"),
        driver_options=None if driver is None else driver.str_map("Options"))


def _tmpfs_options(f: Fields) -> TmpfsOptions:
    raw = f.raw("Options")
    options: list[tuple[str, ...]] = []
    if raw is not None:
        if not isinstance(raw, list):
            raise f.error("Options", raw, "[][]string")
        for item in raw:
            if not isinstance(item, list) or not all(isinstance(x, str) for x in item):
                raise f.error("Options", item, "[]string")
            options.append(tuple(item))
    return TmpfsOptions(size_bytes=f.integer("SizeBytes"), mode=f.integer("Mode", "uint32"),
                        options=tuple(options))
