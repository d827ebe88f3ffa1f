"""cgroup v1: one directory per hierarchy (cpu, memory, devices, freezer, ... and name=systemd;
on a hybrid host also one in the cgroup2 at root/unified, key "", joined without limits).

Limits are written the way runc 1.1 writes them, so that pydesk-runc and runc give a container
the same cgroup files. Never writes to a directory it did not make, except copying cpuset.cpus
and cpuset.mems down into empty cpuset ancestors on the path (the kernel refuses tasks in a
cpuset without them).
"""

from __future__ import annotations

import contextlib
import os
import time

from pydeskd.runtime.cgroups import files
from pydeskd.runtime.errors import RuntimeFailure, SetupFailed, SpecError

TYPE_CHECKING = False  # spec, typing and collections.abc are for mypy only: start-up time
if TYPE_CHECKING:
    from collections.abc import Callable

    from pydeskd.runtime.spec import CpuResources, MemoryResources, Resources

FREEZE_TIMEOUT = 5.0


class V1Cgroup:
    """A container's directories in the v1 hierarchies (``dirs``: controller -> directory)."""

    version = 1
    # Replaced in unit tests by a fake kernel that also makes the control files.
    mkdir: Callable[[str], None] = staticmethod(os.mkdir)
    rmdir: Callable[[str], None] = staticmethod(os.rmdir)

    def __init__(self, dirs: dict[str, str], bases: dict[str, str],
                 default_parents: tuple[str, ...] = (), created: tuple[str, ...] = ()) -> None:
        self.dirs = dict(dirs)
        self.bases = dict(bases)  # controller -> the directory the path is relative to
        self.default_parents = default_parents  # e.g. ("/pydesk",): pydesk's whoever made them
        self.created = list(created)

    # --- state -----------------------------------------------------------------------------

    def to_state(self) -> dict[str, object]:
        return {"version": 1, "dirs": dict(self.dirs), "bases": dict(self.bases),
                "default_parents": list(self.default_parents), "created": list(self.created)}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> V1Cgroup:
        dirs, bases = state.get("dirs"), state.get("bases")
        parents, created = state.get("default_parents", []), state.get("created", [])
        if not (isinstance(dirs, dict) and isinstance(bases, dict)
                and isinstance(parents, list) and isinstance(created, list)):
            raise SetupFailed("cgroup state: malformed v1 description")
        return cls({str(k): str(v) for k, v in dirs.items()},
                   {str(k): str(v) for k, v in bases.items()},
                   tuple(str(p) for p in parents), tuple(str(c) for c in created))

    # --- lifecycle ---------------------------------------------------------------------------

    def leaves(self) -> list[str]:
        return list(dict.fromkeys(self.dirs.values()))

    def create(self, resources: Resources) -> None:
        self._check(resources)
        try:
            for controller, leaf in self.dirs.items():
                if os.path.isdir(leaf):
                    continue  # a hierarchy shared by several controllers (cpu,cpuacct)
                self.created += files.make_dirs(self.bases[controller], leaf, self.mkdir,
                                                self.rmdir)
            if "cpuset" in self.dirs:
                _inherit_cpuset(self.bases["cpuset"], self.dirs["cpuset"])
            self._set(resources)
        except RuntimeFailure as err:
            with contextlib.suppress(RuntimeFailure):  # the first error is the one to report
                self.destroy()
            if isinstance(err, SetupFailed | SpecError):
                raise
            raise SetupFailed(str(err)) from err

    def owns_leaf(self) -> bool:
        return bool(self.dirs) and all(leaf in self.created for leaf in self.leaves())

    def add_process(self, pid: int) -> None:
        for leaf in self.leaves():
            files.write(leaf, "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        for controller in ("pids", "freezer", "memory", "devices"):
            if controller in self.dirs:
                return files.procs(self.dirs[controller])
        return files.procs(self.leaves()[0]) if self.dirs else []

    def freeze(self) -> None:
        self._freezer_to("FROZEN")

    def thaw(self) -> None:
        self._freezer_to("THAWED")

    def is_frozen(self) -> bool:
        return files.read(self._dir("freezer"), "freezer.state") == "FROZEN"

    def destroy(self) -> None:
        deadline = time.monotonic() + files.REMOVE_TIMEOUT
        busy: list[str] = []
        for leaf in self.leaves():
            if leaf not in self.created:
                continue  # it existed before the container: not ours to remove
            busy += files.remove_dirs([leaf], strict=True, rmdir=self.rmdir,
                                      timeout=max(0.0, deadline - time.monotonic()))
        parents = {d for d in self.created if d not in self.dirs.values()}
        for controller, base in self.bases.items():
            parents.update(os.path.normpath(base + p) for p in self.default_parents
                           if controller in self.dirs)
        # Deepest first; one still holding another container's cgroup simply stays.
        files.remove_dirs(sorted(parents, key=lambda d: d.count("/"), reverse=True),
                          strict=False, rmdir=self.rmdir)
        if busy:
            raise RuntimeFailure(f"cgroup: {', '.join(busy)} still in use after "
                                 f"{files.REMOVE_TIMEOUT:g}s")
        self.created = []

    # --- limits ------------------------------------------------------------------------------

    def _dir(self, controller: str) -> str:
        directory = self.dirs.get(controller)
        if directory is None:
            raise RuntimeFailure(f"cgroup: no {controller} hierarchy is mounted")
        return directory

    def _check(self, r: Resources) -> None:
        """Fails before anything is made when a limit needs a hierarchy that is not there."""
        if r.unified:
            raise SpecError("linux.resources.unified: needs cgroup v2; this host has cgroup v1")
        m, c = r.memory, r.cpu
        needs = {
            "memory": bool(m.limit or m.reservation or m.swap or m.disable_oom_killer
                           or m.swappiness is not None),
            "cpu": bool(c.shares or c.quota or c.period),
            "cpuset": bool(c.cpus or c.mems),
            "pids": bool(r.pids_limit),
            "devices": bool(r.devices),
        }
        for controller, needed in needs.items():
            if needed and controller not in self.dirs:
                raise SetupFailed(f"cgroup: limits need the {controller} controller, "
                                  "which is not mounted")
        if m.swappiness is not None and m.swappiness > 100:
            raise SpecError(f"linux.resources.memory.swappiness: invalid value "
                            f"{m.swappiness}; the valid range is 0-100")

    def _set(self, r: Resources) -> None:
        if "memory" in self.dirs:
            _set_memory(self.dirs["memory"], r.memory)
        if "cpu" in self.dirs:
            _set_cpu(self.dirs["cpu"], r.cpu)
        if "cpuset" in self.dirs:
            if r.cpu.cpus:
                files.write(self.dirs["cpuset"], "cpuset.cpus", r.cpu.cpus)
            if r.cpu.mems:
                files.write(self.dirs["cpuset"], "cpuset.mems", r.cpu.mems)
        if r.pids_limit:
            limit = "max" if r.pids_limit < 0 else str(r.pids_limit)
            files.write(self.dirs["pids"], "pids.max", limit)
        if r.devices:
            _set_devices(self.dirs["devices"], r)

    def _freezer_to(self, state: str) -> None:
        directory = self._dir("freezer")
        deadline = time.monotonic() + FREEZE_TIMEOUT
        delay = 0.0005
        while True:
            # Writing again is how v1 retries a freeze that a forking task interrupted.
            files.write(directory, "freezer.state", state)
            if files.read(directory, "freezer.state") == state:
                return
            if time.monotonic() >= deadline:
                if state == "FROZEN":
                    files.write(directory, "freezer.state", "THAWED")
                raise RuntimeFailure(f"cgroup: {directory} did not become {state} "
                                     f"within {FREEZE_TIMEOUT:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


def _set_memory(directory: str, m: MemoryResources) -> None:
    limit, swap = m.limit or 0, m.swap or 0
    has_swap = os.path.exists(os.path.join(directory, "memory.memsw.limit_in_bytes"))
    if limit == -1 and swap == 0 and has_swap:
        swap = -1  # "memory unlimited" means memory+swap unlimited too, as in runc
    if limit and swap:
        current = int(files.read(directory, "memory.limit_in_bytes"))
        # memsw must stay >= limit at every step, so the order depends on the direction.
        if swap == -1 or current < swap:
            files.write(directory, "memory.memsw.limit_in_bytes", str(swap))
            files.write(directory, "memory.limit_in_bytes", str(limit))
        else:
            files.write(directory, "memory.limit_in_bytes", str(limit))
            files.write(directory, "memory.memsw.limit_in_bytes", str(swap))
    else:
        if limit:
            files.write(directory, "memory.limit_in_bytes", str(limit))
        if swap:
            files.write(directory, "memory.memsw.limit_in_bytes", str(swap))
    if m.reservation:
        files.write(directory, "memory.soft_limit_in_bytes", str(m.reservation))
    if m.disable_oom_killer:
        files.write(directory, "memory.oom_control", "1")
    if m.swappiness is not None and m.swappiness != -1:
        files.write(directory, "memory.swappiness", str(m.swappiness))


def _set_cpu(directory: str, c: CpuResources) -> None:
    if c.shares:
        files.write(directory, "cpu.shares", str(c.shares))
        actual = int(files.read(directory, "cpu.shares"))
        if actual != c.shares:  # the kernel clamps silently; runc reports it
            bound = "maximum" if c.shares > actual else "minimum"
            raise SetupFailed(f"cgroup: the {bound} allowed cpu-shares is {actual}")
    period_pending = False
    if c.period:
        try:
            files.write(directory, "cpu.cfs_period_us", str(c.period))
        except SetupFailed:
            # A shorter period can exceed the parent's quota until the new quota is in; retry.
            if not c.quota:
                raise
            period_pending = True
    if c.quota:
        files.write(directory, "cpu.cfs_quota_us", str(c.quota))
        if period_pending:
            files.write(directory, "cpu.cfs_period_us", str(c.period))


def _set_devices(directory: str, r: Resources) -> None:
    from pydeskd.runtime.cgroups.devices import device_policy

    policy = device_policy(r.devices)
    if policy.default_allow:
        # Writing "a" to devices.allow needs the parent to allow all; skip it when already so.
        if files.read(directory, "devices.list") != "a *:* rwm":
            files.write(directory, "devices.allow", "a")
        for ex in policy.exceptions:
            files.write(directory, "devices.deny", ex.line())
    else:
        files.write(directory, "devices.deny", "a")
        for ex in policy.exceptions:
            files.write(directory, "devices.allow", ex.line())


def _inherit_cpuset(base: str, leaf: str) -> None:
    """Copies cpuset.cpus/mems down from ``base`` into every empty directory on the way."""
    parent = base
    for part in os.path.relpath(leaf, base).split("/"):
        if part == ".":
            return
        current = os.path.join(parent, part)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not files.read(current, name):
                files.write(current, name, files.read(parent, name))
        parent = current
