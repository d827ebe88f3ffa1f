"""The qcow2 data disk: created on first start (sparse), grown on request, never shrunk.

What it is for: :func:`ensure_data_disk` makes the disk match the configured size before QEMU
starts; the guest grows its filesystem to the disk at boot (vmcontract.DATA_DISK_SERIAL).
What it must never do: resize a disk that a running QEMU holds (the agent calls it before
launch; qemu-img's own image lock refuses it anyway), or shrink one (data would be cut off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydesk.vm.errors import InvalidArgument, ToolFailed
from pydesk.vm.run import Runner, run

GIB = 1024**3


class DiskChange(StrEnum):
    CREATED = "created"
    GROWN = "grown"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class DiskState:
    change: DiskChange
    size_bytes: int
    previous_bytes: int = 0


def disk_size(path: Path, qemu_img: str, runner: Runner = run) -> int:
    """The virtual size of a disk image, in bytes."""
    out = runner([qemu_img, "info", "--force-share", "--output=json", str(path)])
    try:
        return int(json.loads(out)["virtual-size"])
    except (ValueError, KeyError, TypeError) as e:
        raise ToolFailed(f"qemu-img info {path}: unexpected output") from e


def ensure_data_disk(path: Path, size_gib: int, qemu_img: str,
                     runner: Runner = run) -> DiskState:
    """Creates the disk at ``size_gib`` if missing, grows it if smaller; refuses to shrink."""
    wanted = size_gib * GIB
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # lazy_refcounts: fewer metadata writes; the image is small until the guest writes.
        runner([qemu_img, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on",
                str(path), str(wanted)])
        return DiskState(DiskChange.CREATED, wanted)
    current = disk_size(path, qemu_img, runner)
    if wanted < current:
        raise InvalidArgument(
            f"the data disk is {current / GIB:g} GiB; shrinking it to {size_gib} GiB would "
            "lose data", hint=f"use --disk-size {(current + GIB - 1) // GIB} or more "
                              "(or pydesk vm rm to start over)")
    if wanted == current:
        return DiskState(DiskChange.UNCHANGED, current)
    runner([qemu_img, "resize", "-q", "-f", "qcow2", str(path), str(wanted)])
    return DiskState(DiskChange.GROWN, wanted, current)
