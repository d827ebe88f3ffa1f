"""The container's cgroup, on cgroup v1 (hybrid included) or v2, behind one :class:`Cgroup`.

:func:`open_cgroup` reads the mount table to find the layout under ``root`` and where the
container's directories go; :meth:`Cgroup.create` makes them and writes the limits;
:meth:`Cgroup.to_state` / :func:`restore_cgroup` carry it across runtime invocations.
:func:`host_hierarchies` lists what a "cgroup" mount inside the container should show.

This package must never write to a cgroup it did not create, except what the kernel requires
of ancestors (v2 ``cgroup.subtree_control``, v1 cpuset inheritance), and must never remove a
directory it did not create. Only the standard library: it runs for every container start.
"""

from __future__ import annotations

import os

from pydeskd.runtime.errors import SetupFailed, SpecError

# typing and re cost start-up time that `delete`, `kill` and `state` (which only
# restore a saved cgroup) should not pay; annotations only need them for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pydeskd.runtime.cgroups.interface import Cgroup
    from pydeskd.runtime.cgroups.layout import Hierarchy, MountEntry

__all__ = ["Cgroup", "Hierarchy", "Layout", "MountEntry", "detect_layout", "host_hierarchies",
           "open_cgroup", "restore_cgroup"]

DEFAULT_PARENT = "/pydesk"


def __getattr__(name: str) -> Any:
    # The mount-table reader and the interface are imported when first used (see above).
    if name in ("Hierarchy", "Layout", "MountEntry", "detect_layout"):
        from pydeskd.runtime.cgroups import layout

        return getattr(layout, name)
    if name == "Cgroup":
        from pydeskd.runtime.cgroups.interface import Cgroup

        return Cgroup
    raise AttributeError(name)


def host_hierarchies(root: str = "/sys/fs/cgroup", mountinfo: str | None = None) -> list[Hierarchy]:
    """What runc mounts in a container: the v1 hierarchies (hybrid: the v1 ones only, as runc),
    or the single v2 hierarchy. Raises :class:`SetupFailed` if no cgroup is mounted at ``root``.
    """
    from pydeskd.runtime.cgroups.layout import Hierarchy, detect_layout

    layout = detect_layout(root, mountinfo)
    if layout.version == 2:
        entry = layout.mounts[0]
        return [Hierarchy("", entry.mountpoint, 2, entry.super_options)]
    return [Hierarchy(os.path.basename(m.mountpoint), m.mountpoint, 1, m.controllers)
            for m in layout.mounts]


def open_cgroup(cgroups_path: str, container_id: str, root: str = "/sys/fs/cgroup", *,
                mountinfo: str | None = None, self_cgroup: str | None = None) -> Cgroup:
    """The cgroup for a container, not yet created.

    ``cgroups_path``: "" means ``/pydesk/<id>``; "/a/b" is under each hierarchy's root; "a/b" is
    relative to the caller's own cgroup (as runc). ``mountinfo`` and ``self_cgroup`` replace
    /proc/self/mountinfo and /proc/self/cgroup (for tests). Raises :class:`SpecError` for a
    systemd or malformed path, :class:`SetupFailed` if no cgroup hierarchy is mounted.
    """
    from pydeskd.runtime.cgroups.layout import detect_layout, own_cgroups, read_text

    path, default_parents = _container_path(cgroups_path, container_id)
    layout = detect_layout(root, mountinfo)
    own = own_cgroups(read_text("/proc/self/cgroup") if self_cgroup is None else self_cgroup)
    if layout.version == 2:
        from pydeskd.runtime.cgroups.v2 import V2Cgroup

        entry = layout.mounts[0]
        base = entry.mountpoint if path.startswith("/") else _own_dir(entry, own.get("", "/"))
        return V2Cgroup(leaf=_join(base, path), base=base, root=entry.mountpoint,
                        owned_parents=tuple(_join(base, p) for p in default_parents))
    from pydeskd.runtime.cgroups.v1 import V1Cgroup

    dirs: dict[str, str] = {}
    bases: dict[str, str] = {}
    for entry in layout.mounts:
        if path.startswith("/"):
            base = entry.mountpoint
        else:
            mine = next((own[c] for c in entry.controllers if c in own), "/")
            base = _own_dir(entry, mine)
        for controller in entry.controllers:
            dirs[controller] = _join(base, path)
            bases[controller] = base
    if layout.hybrid is not None:
        # Joined without limits (key ""), as runc does, so the container is in one place in
        # every hierarchy the host has.
        entry = layout.hybrid
        base = entry.mountpoint if path.startswith("/") else _own_dir(entry, own.get("", "/"))
        dirs[""] = _join(base, path)
        bases[""] = base
    return V1Cgroup(dirs=dirs, bases=bases, default_parents=default_parents)


def restore_cgroup(state: dict[str, object]) -> Cgroup:
    """The cgroup described by :meth:`Cgroup.to_state`; raises SetupFailed if it is malformed."""
    version = state.get("version")
    if version == 1:
        from pydeskd.runtime.cgroups.v1 import V1Cgroup

        return V1Cgroup.from_state(state)
    if version == 2:
        from pydeskd.runtime.cgroups.v2 import V2Cgroup

        return V2Cgroup.from_state(state)
    raise SetupFailed(f"cgroup state: unknown version {version!r}")


def _container_path(cgroups_path: str, container_id: str) -> tuple[str, tuple[str, ...]]:
    """The path to use, and the parents that belong to pydesk whoever created them."""
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise SpecError(f"container id {container_id!r} cannot name a cgroup")
        return f"{DEFAULT_PARENT}/{container_id}", (DEFAULT_PARENT,)
    if ":" in cgroups_path:
        raise SpecError("linux.cgroupsPath: systemd cgroup paths are not supported")
    parts = [p for p in cgroups_path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise SpecError(f"linux.cgroupsPath: {cgroups_path!r} is not a usable cgroup path")
    joined = "/".join(parts)
    return ("/" + joined if cgroups_path.startswith("/") else joined), ()


def _own_dir(entry: MountEntry, own_path: str) -> str:
    """The caller's own cgroup directory in a hierarchy mounted at ``entry``."""
    rel = own_path
    if entry.root != "/" and (own_path == entry.root or own_path.startswith(entry.root + "/")):
        rel = own_path[len(entry.root):] or "/"
    return _join(entry.mountpoint, rel)


def _join(base: str, path: str) -> str:
    return os.path.normpath(base + "/" + path.strip("/")) if path.strip("/") else base
