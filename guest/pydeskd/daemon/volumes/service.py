"""VolumeService: Docker's local volume driver and the volume half of container mounts.

What it is for: the API routes call ``create``/``get``/``inspect``/``list``/``remove``/``prune``
and ``disk_usage``; the container service calls the hooks: ``get_or_create`` while resolving a
container's mounts (a named volume is created on first use, as Docker), ``populate`` at create
(fills new volumes from the image, see :mod:`.fill`), ``mounted``/``unmounted`` around a run
(events, and the tmpfs of a ``type=tmpfs`` volume), ``release`` when the container is removed
(``rm -v`` removes its anonymous volumes).

Which containers use a volume is the union of what the container records say (the ``users``
callback the container service installs: it survives restarts) and the holds taken by
``get_or_create`` for containers still being created (their record does not exist yet).

Locking: one lock over the volume table and the holds; filling a volume happens outside it,
under that volume's own fill lock, so a slow copy never blocks other volume calls.

What it must never do: remove a volume a container references, or publish events under its lock.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from pydeskd.containerd.errors import FailedPrecondition, NotFound
from pydeskd.containerd.snapshots import mount as snapmount
from pydeskd.containerd.snapshots.overlay import disk_usage
from pydeskd.daemon.volumes import filters as vfilters
from pydeskd.daemon.volumes.fill import fill, is_empty
from pydeskd.daemon.volumes.model import (
    ANONYMOUS_LABEL,
    LOCAL,
    Volume,
    anonymous_name,
    rfc3339_now,
    validate_name,
    validate_options,
)
from pydeskd.daemon.volumes.store import VolumeStore

log = logging.getLogger(__name__)

# volume name -> IDs of the containers whose records reference it
Users = Callable[[], Mapping[str, Iterable[str]]]


class EventSink(Protocol):
    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> Any: ...


class VolumeMount(Protocol):
    """What the hooks read of a container mount (``containers.mounts.Resolved``)."""

    @property
    def type(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def propagation(self) -> str: ...
    @property
    def nocopy(self) -> bool: ...


def users_from_records(records: Iterable[Any]) -> dict[str, list[str]]:
    """volume name -> container IDs, from container records (``resolved_mounts``)."""
    out: dict[str, list[str]] = {}
    for record in records:
        for m in record.resolved_mounts:
            if m.get("type") == "volume" and m.get("name"):
                out.setdefault(str(m["name"]), []).append(record.id)
    return out


class VolumeService:
    def __init__(self, root: Path, events: EventSink | None = None, *, durable: bool = True,
                 mounter: snapmount.Mounter | None = None) -> None:
        self.store = VolumeStore(root, durable)
        self.events = events
        self.mounter = mounter
        self._lock = threading.RLock()
        self._volumes = {v.name: v for v in self.store.load()}
        self._holds: dict[str, set[str]] = {}        # container ID -> volume names
        self._users: Users = dict
        self._fill_locks: dict[str, threading.Lock] = {}
        self._mounted: dict[str, list[str]] = {}     # container ID -> volumes of its run
        self._tmpfs_active: dict[str, int] = {}      # tmpfs volume -> runs using it

    def set_users(self, users: Users) -> None:
        self._users = users

    # --- queries ---------------------------------------------------------------------------

    def mountpoint(self, name: str) -> Path:
        return self.store.data(name)

    def refs(self) -> dict[str, set[str]]:
        """volume name -> container IDs using it (records and in-flight creates)."""
        out: dict[str, set[str]] = {}
        for name, ids in self._users().items():
            out.setdefault(name, set()).update(ids)
        with self._lock:
            for cid, names in self._holds.items():
                for name in names:
                    out.setdefault(name, set()).add(cid)
        return out

    def get(self, name: str) -> Volume:
        """Raises NotFound with Docker's message."""
        with self._lock:
            volume = self._volumes.get(name)
        if volume is None:
            raise NotFound(f"get {name}: no such volume")
        return volume

    def api(self, volume: Volume, usage: tuple[int, int] | None = None) -> dict[str, Any]:
        return volume.to_api(str(self.mountpoint(volume.name)), usage)

    def inspect(self, name: str, size: bool = False) -> dict[str, Any]:
        volume = self.get(name)
        if not size:
            return self.api(volume)
        return self.api(volume, (self.size(volume), len(self.refs().get(name, ()))))

    def size(self, volume: Volume) -> int:
        return disk_usage(self.mountpoint(volume.name)).size

    def list(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """``GET /volumes``. Raises InvalidArgument (unknown filter, bad boolean)."""
        flt = dict(filters or {})
        vfilters.check_keys(flt, vfilters.LIST_KEYS)
        vfilters.boolean(flt, "dangling")
        refs = self.refs()
        with self._lock:
            volumes = sorted(self._volumes.values(), key=lambda v: v.name)
        return [self.api(v) for v in volumes
                if vfilters.matches_list(v, flt, bool(refs.get(v.name)))]

    def disk_usage(self) -> builtins.list[dict[str, Any]]:
        """Every volume with ``UsageData`` (``system df``)."""
        refs = self.refs()
        with self._lock:
            volumes = sorted(self._volumes.values(), key=lambda v: v.name)
        return [self.api(v, (self.size(v), len(refs.get(v.name, ())))) for v in volumes]

    # --- create / remove / prune ----------------------------------------------------------

    def create(self, name: str | None = None, driver: str = "", driver_opts: Mapping[str, str]
               | None = None, labels: Mapping[str, str] | None = None, *,
               anonymous: bool = False, ref: str = "") -> Volume:
        """``docker volume create``: an existing name is returned as it is (Docker's rule).
        Raises InvalidArgument (name, driver, options), FailedPrecondition (another driver)."""
        driver = driver or LOCAL
        if not name:
            name, anonymous = anonymous_name(), True
        validate_name(name)
        with self._lock:
            existing = self._volumes.get(name)
            if existing is not None:
                if driver != existing.driver:
                    raise FailedPrecondition(
                        f"create {name}: a volume with the name {name} already exists with "
                        f"driver \"{existing.driver}\"")
                self._hold(ref, name)
                return existing
            options = validate_options(driver, driver_opts or {})
            all_labels = dict(labels or {})
            if anonymous:
                all_labels.setdefault(ANONYMOUS_LABEL, "")
            volume = Volume(name, rfc3339_now(), driver, all_labels, options)
            self.store.save(volume)
            self._volumes[name] = volume
            self._hold(ref, name)
        self._publish("create", name, {"driver": volume.driver})
        return volume

    def _hold(self, ref: str, name: str) -> None:
        if ref:
            self._holds.setdefault(ref, set()).add(name)

    def remove(self, name: str, force: bool = False) -> None:
        """``docker volume rm``. Raises NotFound (unless ``force``), FailedPrecondition (in
        use: Docker's "volume is in use - [IDs]")."""
        try:
            self._remove(name)
        except NotFound:
            if not force:
                raise

    def _remove(self, name: str, anonymous_only: bool = False) -> int:
        recorded = set(self._users().get(name, ()))
        with self._lock:
            volume = self._volumes.get(name)
            if volume is None:
                raise NotFound(f"get {name}: no such volume")
            # Holds are read under the lock: a container taking this volume right now holds
            # it before its record exists, so it is either seen here or finds it gone.
            held = {cid for cid, names in self._holds.items() if name in names}
            users = sorted(recorded | held)
            if users:
                raise FailedPrecondition(f"remove {name}: volume is in use - "
                                         f"[{', '.join(users)}]")
            if anonymous_only and not volume.anonymous:
                return 0
            size = self.size(volume)
            if volume.tmpfs:
                self._tmpfs_active.pop(name, None)
                with contextlib.suppress(OSError):
                    snapmount.unmount(self.mountpoint(name), self.mounter, detach=True)
            self.store.delete(name)
            del self._volumes[name]
            self._fill_locks.pop(name, None)
        self._publish("destroy", name, {"driver": volume.driver})
        return size

    def prune(self, filters: Mapping[str, Sequence[str]] | None = None,
              all_by_default: bool = False) -> dict[str, Any]:
        """``docker volume prune``: unused volumes the filters choose; anonymous ones only
        unless ``all=true`` (or ``all_by_default``: API < 1.42 pruned named ones too)."""
        flt = dict(filters or {})
        vfilters.check_keys(flt, vfilters.PRUNE_KEYS)
        all_flag = vfilters.boolean(flt, "all")
        all_volumes = all_by_default if all_flag is None else all_flag
        refs = self.refs()
        with self._lock:
            chosen = [v.name for v in self._volumes.values()
                      if not refs.get(v.name) and vfilters.matches_prune(v, flt, all_volumes)]
        deleted: list[str] = []
        reclaimed = 0
        for name in sorted(chosen):
            try:
                reclaimed += self._remove(name)
            except (NotFound, FailedPrecondition):
                continue  # removed or taken since the choice: not pruned
            deleted.append(name)
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}

    # --- container hooks ------------------------------------------------------------------

    def get_or_create(self, name: str, anonymous: bool = False, ref: str = "") -> Path:
        """The data directory of volume ``name`` for a container being created (``ref``),
        created if missing. Raises InvalidArgument (a bad name).
        """
        self.create(name, anonymous=anonymous, ref=ref)
        return self.mountpoint(name)

    def populate(self, ref: str, mounts: Sequence[VolumeMount],
                 rootfs: Callable[[], AbstractContextManager[Path]]) -> None:
        """Fill the new volumes among ``mounts`` from the image (``rootfs()`` mounts the
        container's root filesystem for the copy; it is mounted only if a volume needs it).
        Raises OSError or InvalidArgument from the copy."""
        del ref
        wanted = [m for m in mounts if m.type == "volume" and not m.nocopy
                  and self._needs_fill(m.name)]
        if not wanted:
            return
        with rootfs() as root:
            for m in wanted:
                with self._fill_lock(m.name):
                    if not self._needs_fill(m.name):
                        continue
                    if fill(root, m.destination, self.mountpoint(m.name)):
                        self._mark_filled(m.name)

    def _needs_fill(self, name: str) -> bool:
        with self._lock:
            volume = self._volumes.get(name)
        return (volume is not None and not volume.filled and not volume.tmpfs
                and is_empty(self.mountpoint(name)))

    def _fill_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._fill_locks.setdefault(name, threading.Lock())

    def _mark_filled(self, name: str) -> None:
        with self._lock:
            volume = self._volumes.get(name)
            if volume is None:
                return
            volume = volume.with_filled()
            self.store.save(volume)
            self._volumes[name] = volume

    def mounted(self, ref: str, mounts: Sequence[VolumeMount]) -> None:
        """Before a run of container ``ref`` starts: tmpfs volumes are mounted, and a
        ``mount`` event is published per volume. Raises OSError (a tmpfs mount failed)."""
        self.unmounted(ref)  # a run that was never reported ended
        used = [m for m in mounts if m.type == "volume" and m.name]
        with self._lock:
            for m in used:
                volume = self._volumes.get(m.name)
                if volume is not None and volume.tmpfs:
                    if self._tmpfs_active.get(m.name, 0) == 0:
                        self._mount_tmpfs(volume)
                    self._tmpfs_active[m.name] = self._tmpfs_active.get(m.name, 0) + 1
            self._mounted[ref] = [m.name for m in used]
        for m in used:
            self._publish("mount", m.name, {
                "container": ref, "destination": m.destination, "driver": LOCAL,
                "propagation": m.propagation, "read/write": str(not m.read_only).lower()})

    def adopt(self, ref: str, mounts: Sequence[VolumeMount]) -> None:
        """A run found again by live restore: its volumes count as mounted (no events; a
        tmpfs volume is still mounted from before the restart), so its exit unmounts them."""
        used = [m.name for m in mounts if m.type == "volume" and m.name]
        with self._lock:
            if ref in self._mounted:
                return
            self._mounted[ref] = used
            for name in used:
                volume = self._volumes.get(name)
                if volume is not None and volume.tmpfs:
                    self._tmpfs_active[name] = self._tmpfs_active.get(name, 0) + 1

    def unmounted(self, ref: str) -> None:
        """After a run of ``ref`` ended (safe to call when nothing was mounted)."""
        with self._lock:
            names = self._mounted.pop(ref, None)
            if names is None:
                return
            for name in names:
                count = self._tmpfs_active.get(name, 0)
                if count <= 0:
                    continue
                self._tmpfs_active[name] = count - 1
                if count == 1:
                    with contextlib.suppress(OSError):
                        snapmount.unmount(self.mountpoint(name), self.mounter, detach=True)
        for name in names:
            self._publish("unmount", name, {"container": ref, "driver": LOCAL})

    def _mount_tmpfs(self, volume: Volume) -> None:
        mounter = self.mounter or snapmount.LinuxMounter()
        mounter.mount("tmpfs", str(self.mountpoint(volume.name)), "tmpfs", 0,
                      volume.options.get("o", ""))

    def release(self, ref: str, remove: Sequence[str] = ()) -> None:
        """Container ``ref`` is gone (removed, or its create failed): its holds are dropped,
        and the volumes in ``remove`` (its anonymous ones, ``rm -v``) are removed unless
        another container uses them."""
        self.unmounted(ref)
        with self._lock:
            self._holds.pop(ref, None)
        for name in remove:
            with contextlib.suppress(NotFound, FailedPrecondition):
                self._remove(name, anonymous_only=True)

    # --- events ---------------------------------------------------------------------------

    def _publish(self, action: str, name: str, attrs: Mapping[str, str]) -> None:
        if self.events is None:
            return
        try:
            self.events.publish("volume", action, name, dict(attrs))
        except Exception:  # an event bus failure never fails a volume operation
            log.exception("publishing volume event %s failed", action)
