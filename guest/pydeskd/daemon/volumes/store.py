"""Volumes on disk: ``<root>/<name>/volume.json`` (the record) beside ``<root>/<name>/_data``.

What it is for: the one module that knows the volume directory layout. Records are written
atomically (temporary file, fsync, rename), so a crash leaves the old record or the new one;
a volume directory whose record is missing (created by an older pydeskd, or a crash between
``mkdir`` and the first write) is adopted as a plain local volume on load. Removal renames the
directory out of the way first (``.trash-*``), so a half-removed volume never shows up again,
and then deletes it without following symlinks (``snapshots.removal``).

What it must never do: follow a symlink out of the volumes root, or list a trash directory.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
from pathlib import Path

from pydeskd.containerd.snapshots.removal import remove_path
from pydeskd.daemon.volumes.model import Volume, validate_name
from pydeskd.shim.paths import atomic_write

RECORD = "volume.json"
DATA = "_data"
_TRASH = ".trash-"


class VolumeStore:
    def __init__(self, root: Path, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        root.mkdir(parents=True, exist_ok=True, mode=0o701)
        for leftover in root.glob(_TRASH + "*"):
            remove_path(leftover)

    def dir(self, name: str) -> Path:
        return self.root / name

    def data(self, name: str) -> Path:
        return self.root / name / DATA

    def save(self, volume: Volume) -> None:
        """Creates the directories if needed and writes the record atomically."""
        vdir = self.dir(volume.name)
        vdir.mkdir(exist_ok=True, mode=0o701)
        (vdir / DATA).mkdir(exist_ok=True, mode=0o755)
        atomic_write(vdir / RECORD, volume.to_json(), durable=self.durable)

    def load(self) -> list[Volume]:
        """Every volume on disk (directories without a record are adopted)."""
        out: list[Volume] = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
                continue
            try:
                validate_name(entry.name)
            except Exception:
                continue
            volume = self._read(entry)
            if volume is not None:
                out.append(volume)
        return out

    def _read(self, vdir: Path) -> Volume | None:
        import json
        try:
            obj = json.loads((vdir / RECORD).read_text())
            return Volume.from_json(obj)
        except FileNotFoundError:
            if not (vdir / DATA).is_dir():
                return None
            stamp = datetime.datetime.fromtimestamp((vdir / DATA).stat().st_mtime,
                                                    datetime.UTC).replace(microsecond=0)
            volume = Volume(vdir.name, stamp.isoformat().replace("+00:00", "Z"))
            self.save(volume)
            return volume
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def delete(self, name: str) -> None:
        vdir = self.dir(name)
        trash = self.root / f"{_TRASH}{name}-{secrets.token_hex(4)}"
        try:
            os.rename(vdir, trash)
        except FileNotFoundError:
            return
        with contextlib.suppress(FileNotFoundError):
            remove_path(trash)
