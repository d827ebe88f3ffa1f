"""cgroup v2 (unified): one directory; limits converted from the OCI (v1-shaped) values as runc.

memory.swap in config.json is memory+swap (v1 semantics) and becomes memory.swap.max = swap -
limit; cpu.shares becomes cpu.weight; device rules become an eBPF program (see ebpf.py).
``swappiness`` and ``disableOOMKiller`` have no v2 file and are ignored, as runc 1.1 does.
Ancestors are only touched to enable controllers in ``cgroup.subtree_control``.
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

    from pydeskd.runtime.spec import Resources

FREEZE_TIMEOUT = 5.0
# Enabled for children when available: the ones limits and `docker stats` use. Others (hugetlb,
# rdma, misc) are only enabled when a `unified` key names them, to leave the host as it is.
STANDARD_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")


def cpu_weight(shares: int) -> int:
    """runc's conversion of v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000]."""
    return 0 if shares == 0 else 1 + ((shares - 2) * 9999) // 262142


def swap_max(swap: int, limit: int) -> int:
    """memory.swap.max from the OCI memory+swap value (0: leave unset, -1: "max")."""
    if limit == -1 and swap == 0:
        return -1  # memory unlimited and swap not given: both unlimited, as on v1
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise SpecError("linux.resources.memory.swap: a swap limit needs a memory limit")
    if limit < 0:
        raise SpecError(f"linux.resources.memory.limit: invalid value {limit}")
    if swap < limit:
        raise SpecError("linux.resources.memory.swap: memory+swap must be >= the memory limit")
    return swap - limit


def _num(value: int) -> str:
    return "max" if value == -1 else str(value)


class V2Cgroup:
    """A container's directory in the unified hierarchy mounted at ``root``."""

    version = 2
    # Replaced in unit tests by a fake kernel that also makes the control files.
    mkdir: Callable[[str], None] = staticmethod(os.mkdir)
    rmdir: Callable[[str], None] = staticmethod(os.rmdir)

    def __init__(self, leaf: str, base: str, root: str, owned_parents: tuple[str, ...] = (),
                 created: tuple[str, ...] = ()) -> None:
        self.leaf = leaf
        self.base = base  # the directory the path is relative to
        self.root = root  # the hierarchy's mountpoint
        self.owned_parents = owned_parents  # e.g. /sys/fs/cgroup/pydesk: pydesk's, whoever made it
        self.created = list(created)

    def to_state(self) -> dict[str, object]:
        return {"version": 2, "leaf": self.leaf, "base": self.base, "root": self.root,
                "owned_parents": list(self.owned_parents), "created": list(self.created)}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> V2Cgroup:
        leaf, base, root = state.get("leaf"), state.get("base"), state.get("root")
        owned, created = state.get("owned_parents", []), state.get("created", [])
        if not (isinstance(leaf, str) and isinstance(base, str) and isinstance(root, str)
                and isinstance(owned, list) and isinstance(created, list)):
            raise SetupFailed("cgroup state: malformed v2 description")
        return cls(leaf, base, root, tuple(str(p) for p in owned), tuple(str(c) for c in created))

    # --- lifecycle ---------------------------------------------------------------------------

    def create(self, resources: Resources) -> None:
        swap = swap_max(resources.memory.swap or 0, resources.memory.limit or 0)
        for key, _ in resources.unified:
            if "/" in key or key.startswith(".") or "." not in key:
                raise SpecError(f"linux.resources.unified: {key!r} is not a cgroup file name")
        try:
            self.created += files.make_dirs(self.base, self.leaf, self.mkdir, self.rmdir)
            self._enable_controllers(resources)
            self._set(resources, swap)
        except RuntimeFailure as err:
            with contextlib.suppress(RuntimeFailure):  # the first error is the one to report
                self.destroy()
            if isinstance(err, SetupFailed | SpecError):
                raise
            raise SetupFailed(str(err)) from err

    def owns_leaf(self) -> bool:
        return self.leaf in self.created

    def add_process(self, pid: int) -> None:
        files.write(self.leaf, "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        return files.procs(self.leaf)

    def freeze(self) -> None:
        self._freeze_to(True)

    def thaw(self) -> None:
        self._freeze_to(False)

    def is_frozen(self) -> bool:
        return self._events().get("frozen") == "1"

    def destroy(self) -> None:
        # A leaf that existed before the container (someone else's cgroup) is never removed.
        busy = (files.remove_dirs([self.leaf], strict=True, rmdir=self.rmdir)
                if self.leaf in self.created else [])
        parents = {d for d in self.created if d != self.leaf} | set(self.owned_parents)
        files.remove_dirs(sorted(parents, key=lambda d: d.count("/"), reverse=True),
                          strict=False, rmdir=self.rmdir)
        if busy:
            raise RuntimeFailure(f"cgroup: {self.leaf} still in use after "
                                 f"{files.REMOVE_TIMEOUT:g}s")
        self.created = []

    # --- limits ------------------------------------------------------------------------------

    def _enable_controllers(self, r: Resources) -> None:
        wanted = list(STANDARD_CONTROLLERS)
        wanted += [key.split(".", 1)[0] for key, _ in r.unified
                   if key.split(".", 1)[0] not in wanted and not key.startswith("cgroup.")]
        current = self.root
        for part in os.path.relpath(self.leaf, self.root).split("/")[:-1]:
            self._enable_in(current, wanted)
            current = os.path.join(current, part)
        self._enable_in(current, wanted)

    @staticmethod
    def _enable_in(directory: str, wanted: list[str]) -> None:
        available = files.read(directory, "cgroup.controllers").split()
        enabled = files.read(directory, "cgroup.subtree_control").split()
        missing = [c for c in wanted if c in available and c not in enabled]
        if not missing:
            return
        try:
            files.write(directory, "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
        except SetupFailed:
            # One refused controller fails the whole write; enable the others one by one. A
            # limit that needs a refused one then fails with the file's name.
            for controller in missing:
                with contextlib.suppress(SetupFailed):
                    files.write(directory, "cgroup.subtree_control", f"+{controller}")

    def _set(self, r: Resources, swap: int) -> None:
        m, c = r.memory, r.cpu
        # swap == limit gives 0: swap disabled, written as "0"; an unset swap writes nothing.
        if swap or (m.swap or 0) > 0:
            value = _num(swap)
            if value in ("max", "0") and not os.path.exists(
                    os.path.join(self.leaf, "memory.swap.max")):
                pass  # no swap accounting: "unlimited" or "none" is already the case
            else:
                files.write(self.leaf, "memory.swap.max", value)
        if m.limit:
            files.write(self.leaf, "memory.max", _num(m.limit))
        if m.reservation:
            files.write(self.leaf, "memory.low", _num(m.reservation))
        if c.shares:
            files.write(self.leaf, "cpu.weight", str(cpu_weight(c.shares)))
        if c.quota or c.period:
            value = str(c.quota) if c.quota and c.quota > 0 else "max"
            files.write(self.leaf, "cpu.max", f"{value} {c.period}" if c.period else value)
        if c.cpus:
            files.write(self.leaf, "cpuset.cpus", c.cpus)
        if c.mems:
            files.write(self.leaf, "cpuset.mems", c.mems)
        if r.pids_limit:
            files.write(self.leaf, "pids.max", "max" if r.pids_limit < 0 else str(r.pids_limit))
        for key, value in r.unified:
            files.write(self.leaf, key, value)
        if r.devices:
            from pydeskd.runtime.cgroups.devices import device_policy
            from pydeskd.runtime.cgroups.ebpf import attach_device_program

            attach_device_program(self.leaf, device_policy(r.devices))

    def _events(self) -> dict[str, str]:
        text = files.read(self.leaf, "cgroup.events")
        return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)

    def _freeze_to(self, frozen: bool) -> None:
        try:
            files.write(self.leaf, "cgroup.freeze", "1" if frozen else "0")
        except SetupFailed as err:
            raise RuntimeFailure(str(err)) from err
        deadline = time.monotonic() + FREEZE_TIMEOUT
        delay = 0.0005
        while self.is_frozen() != frozen:
            if time.monotonic() >= deadline:
                raise RuntimeFailure(f"cgroup: {self.leaf} did not become "
                                     f"{'frozen' if frozen else 'thawed'} within "
                                     f"{FREEZE_TIMEOUT:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
