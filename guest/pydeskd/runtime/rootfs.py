"""The container's root filesystem: the mount plan as data, and its execution in the init.

:func:`plan_mounts` turns ``config.json`` mounts into :class:`MountStep` values (flags, data,
propagation) with no I/O. :func:`prepare` runs in the init's new mount namespace, in runc's
order: make ``/`` a slave (or ``rootfsPropagation``) so nothing reaches the host, bind the
rootfs onto itself, each mount in order at a destination resolved *inside* the rootfs
(:func:`secure_join`), device nodes and ``/dev`` links, the cwd. :func:`pivot` switches root
(pivot_root, or MS_MOVE + chroot) and detaches the old one; :func:`finalize` applies what must
happen inside the new root (readonly and masked paths, read-only root).

Every mount goes through the :class:`Syscalls` seam, so plans are tested with
``RecordingSyscalls``. Must never mount anything outside the container's mount namespace.
"""

from __future__ import annotations

import errno
import os

from pydeskd.runtime import syscalls as sc
from pydeskd.runtime.errors import SetupFailed
from pydeskd.runtime.securejoin import secure_join
from pydeskd.runtime.spec import Mount, Spec

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from typing import NamedTuple

    from pydeskd.runtime.syscalls import Syscalls
else:
    from pydeskd.runtime.record import NamedTuple

# option -> (clear?, flag), as mount(8) and runc read them.
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (True, sc.MS_SYNCHRONOUS), "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND), "defaults": (False, 0), "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME), "dirsync": (False, sc.MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC), "mand": (False, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME), "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME), "noexec": (False, sc.MS_NOEXEC),
    "nomand": (True, sc.MS_MANDLOCK), "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME), "nosuid": (False, sc.MS_NOSUID),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW), "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME), "remount": (False, sc.MS_REMOUNT),
    "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY),
    "strictatime": (False, sc.MS_STRICTATIME), "suid": (True, sc.MS_NOSUID),
    "sync": (False, sc.MS_SYNCHRONOUS),
}
PROPAGATION_OPTIONS = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# runc's extension (not mount(2) data): fill a tmpfs with what it covers (copyup.py).
COPY_UP = "tmpcopyup"
# runc mounts the per-hierarchy cgroup directories with these whatever the spec says.
CGROUP_FLAGS = sc.MS_NOEXEC | sc.MS_NOSUID | sc.MS_NODEV
# statvfs f_flag bits -> MS_* flags a remount must keep (they differ above 64).
_STATVFS_KEEP = ((os.ST_RDONLY, sc.MS_RDONLY), (os.ST_NOSUID, sc.MS_NOSUID),
                 (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
                 (os.ST_NOATIME, sc.MS_NOATIME), (os.ST_NODIRATIME, sc.MS_NODIRATIME),
                 (os.ST_RELATIME, sc.MS_RELATIME))


class MountStep(NamedTuple):
    """One spec mount, decoded: what to pass to mount(2) and what to do after."""

    destination: str  # container path, resolved inside the rootfs when applied
    source: str
    fstype: str
    flags: int  # MS_* flags, propagation excluded
    data: str
    propagation: tuple[int, ...] = ()
    copy_up: bool = False

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


class CgroupView(NamedTuple):
    """What the in-container "cgroup" mount needs, computed in the init after it joined its
    cgroup: the layout version, whether it has its own cgroup namespace, and per v1 hierarchy
    (directory name such as "cpu,cpuacct", mount data such as "cpu,cpuacct", host directory
    of the container's cgroup)."""

    version: int
    namespaced: bool
    hierarchies: tuple[tuple[str, str, str], ...] = ()
    unified_path: str = ""  # v2: host path of the container's cgroup


def parse_options(options: tuple[str, ...]) -> tuple[int, tuple[int, ...], str]:
    """(flags, propagation flags, data) for mount options, as runc's parseMountOptions."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in options:
        if option in FLAG_OPTIONS:
            clear, flag = FLAG_OPTIONS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in PROPAGATION_OPTIONS:
            propagation.append(PROPAGATION_OPTIONS[option])
        elif option != COPY_UP:
            data.append(option)
    return flags, tuple(propagation), ",".join(data)


def plan_mount(mount: Mount) -> MountStep:
    flags, propagation, data = parse_options(mount.options)
    if mount.type == "bind":
        flags |= sc.MS_BIND
    return MountStep(destination=os.path.normpath(mount.destination), source=mount.source,
                     fstype=mount.type, flags=flags, data=data, propagation=propagation,
                     copy_up=COPY_UP in mount.options and mount.type == "tmpfs")


def plan_mounts(spec: Spec) -> tuple[MountStep, ...]:
    return tuple(plan_mount(m) for m in spec.mounts)


def root_propagation(spec: Spec) -> int:
    """The flags for making "/" unreachable from the host: rslave unless the spec says."""
    name = spec.linux.rootfs_propagation
    return PROPAGATION_OPTIONS[name] if name else sc.MS_SLAVE | sc.MS_REC


# ------------------------------------------------------------------ before pivot_root


def prepare(sys: Syscalls, spec: Spec, rootfs: str, cgroups: CgroupView | None,
            make_devices: bool = True) -> None:
    """Mounts everything of the spec under rootfs; raises SetupFailed naming the mount."""
    sys.mount("", "/", "", root_propagation(spec), "")
    make_parent_private(sys, rootfs)
    sys.mount(rootfs, rootfs, "bind", sc.MS_BIND | sc.MS_REC, "")
    for step in plan_mounts(spec):
        try:
            if step.fstype in ("cgroup", "cgroup2"):
                mount_cgroup(sys, rootfs, step, cgroups)
            else:
                mount_one(sys, rootfs, step)
        except OSError as exc:
            raise SetupFailed(f"mount {step.source or step.fstype} on {step.destination}: "
                              f"{exc.strerror or exc}") from exc
    if make_devices:
        _make_devices(spec, rootfs)
    if spec.process is not None:
        # runc creates a missing cwd (0755) before pivot_root.
        os.makedirs(secure_join(rootfs, spec.process.cwd), mode=0o755, exist_ok=True)


def parent_mount(path: str, mountinfo: str) -> tuple[str, bool]:
    """(mount point holding ``path``, whether it is shared) from mountinfo text."""
    best, shared = "/", False
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            # The last of several mounts on one point is the visible one: ">=" keeps it.
            best = point
            shared = any(f.startswith("shared:") for f in fields[6:fields.index("-")])
    return best, shared


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def make_parent_private(sys: Syscalls, rootfs: str, mountinfo: str | None = None) -> None:
    """Makes the mount holding the rootfs private if it is shared (runc's
    rootfsParentMountPrivate): otherwise the rootfs bind, and every mount made beneath it,
    propagate back into the host's namespace (rootfsPropagation shared/rshared/private keep
    "/" shared), and pivot_root refuses a shared parent. ``rootfsPropagation`` "shared" is
    applied to the new root after the pivot (:func:`finalize`)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    point, shared = parent_mount(os.path.realpath(rootfs), mountinfo)
    if shared:
        sys.mount("", point, "", sc.MS_PRIVATE, "")


def _make_devices(spec: Spec, rootfs: str) -> None:
    from pydeskd.runtime import devices

    if devices.dev_is_bind_mounted(spec):
        # /dev is then someone else's directory (the host's /dev, say): as runc, create
        # nothing in it, or linux.devices would make device nodes on the host.
        return
    old = os.umask(0)
    try:
        for device in devices.devices_to_create(spec):
            devices.create_device(rootfs, device)
        devices.setup_ptmx(rootfs)
        devices.create_dev_symlinks(rootfs)
    finally:
        os.umask(old)


def make_target(path: str, as_file: bool) -> None:
    """Creates the mount point: an empty file when binding a file, else a directory."""
    if as_file:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if not os.path.lexists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    else:
        os.makedirs(path, mode=0o755, exist_ok=True)


def mount_one(sys: Syscalls, rootfs: str, step: MountStep) -> None:
    target = secure_join(rootfs, step.destination)
    if step.is_bind:
        source_is_file = not os.path.isdir(step.source)
        if not os.path.exists(step.source):
            raise OSError(errno.ENOENT, f"bind source {step.source} does not exist")
        make_target(target, source_is_file)
        sys.mount(step.source, target, step.fstype or "bind", step.flags, step.data)
        for flag in step.propagation:
            sys.mount("", target, "", flag, "")
        # A bind mount ignores every other flag: a remount applies them (ro, nosuid, ...).
        if step.flags & ~(sc.MS_REC | sc.MS_REMOUNT | sc.MS_BIND):
            sys.mount(step.source, target, step.fstype or "bind",
                      step.flags | sc.MS_REMOUNT, "")
        return
    try:
        existing_mode: int | None = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        existing_mode = None
    make_target(target, False)
    flags = step.flags
    if step.fstype == "tmpfs":
        # Mounted writable first so that later mounts and nodes beneath it can be made.
        flags &= ~sc.MS_RDONLY
    if step.copy_up and existing_mode is not None:
        from pydeskd.runtime.copyup import mount_with_copy_up

        mount_with_copy_up(sys, step.source, target, flags, step.data)
    else:
        sys.mount(step.source, target, step.fstype, flags, step.data)
    for flag in step.propagation:
        sys.mount("", target, "", flag, "")
    if step.fstype == "tmpfs" and existing_mode is not None:
        # runc gives a tmpfs the mode of the directory it covers (an image's 1777 /tmp stays
        # 1777), whatever mode= says; only a new mount point keeps mode=.
        os.chmod(target, existing_mode)
    if step.fstype == "tmpfs" and step.flags & sc.MS_RDONLY and step.destination != "/dev":
        sys.mount(step.source, target, step.fstype, step.flags | sc.MS_REMOUNT, step.data)


def mount_cgroup(sys: Syscalls, rootfs: str, step: MountStep, view: CgroupView | None) -> None:
    """The "cgroup" mount: cgroup2, or (v1) a tmpfs with one mount per hierarchy."""
    if view is None:
        raise OSError(errno.EINVAL, "no cgroup for the container")
    target = secure_join(rootfs, step.destination)
    make_target(target, False)
    if view.version == 2:
        try:
            sys.mount(step.source or "cgroup", target, "cgroup2", step.flags, step.data)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EBUSY) or not view.unified_path:
                raise
            sys.mount(view.unified_path, target, "bind", step.flags | sc.MS_BIND | sc.MS_REC, "")
            if step.flags & sc.MS_RDONLY:
                sys.mount(view.unified_path, target, "bind",
                          step.flags | sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT, "")
        return
    sys.mount("tmpfs", target, "tmpfs", CGROUP_FLAGS, "mode=755")
    for name, options, host_path in view.hierarchies:
        sub = os.path.join(target, name)
        make_target(sub, False)
        flags = CGROUP_FLAGS | (step.flags & sc.MS_RDONLY)
        if view.namespaced:
            # A named hierarchy (name=systemd) is mounted with its name as source, as runc.
            source = options.split("=", 1)[1] if options.startswith("name=") else "cgroup"
            sys.mount(source, sub, "cgroup", flags, options)
        else:
            sys.mount(host_path, sub, "bind", flags | sc.MS_BIND | sc.MS_REC, "")
            sys.mount(host_path, sub, "bind", flags | sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT, "")
        # cpu,cpuacct mounted together: cpu and cpuacct are links to it, as on the host.
        if "," in name:
            for single in name.split(","):
                link = os.path.join(target, single)
                if not os.path.lexists(link):
                    os.symlink(name, link)
    # runc 1.1 leaves this tmpfs writable even for a read-only "cgroup" mount (only the
    # hierarchies below it are read-only); we show the container the same thing.


# ------------------------------------------------------------------ switching root


def pivot(sys: Syscalls, rootfs: str, no_pivot: bool) -> None:
    """Makes rootfs the root: pivot_root and detach the old root, or MS_MOVE + chroot."""
    if no_pivot:
        os.chdir(rootfs)
        sys.mount(rootfs, "/", "", sc.MS_MOVE, "")
        os.chroot(".")
        os.chdir("/")
        return
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        # pivot_root(".", ".") stacks the old root on top of the new one: no put_old directory
        # is needed inside the rootfs, and unmounting "." then removes exactly the old root.
        os.fchdir(new_root)
        sys.pivot_root(".", ".")
        os.fchdir(old_root)
        # Slave first, so that the detach does not propagate to the host's mounts.
        sys.mount("", ".", "", sc.MS_SLAVE | sc.MS_REC, "")
        sys.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


# ------------------------------------------------------------------ after pivot_root


def finalize(sys: Syscalls, spec: Spec) -> None:
    """Inside the new root: /dev read-only if asked, propagation, the read-only root (runc's
    finalizeRootfs). Readonly and masked paths come later (:func:`protect_paths`), after the
    sysctls have been written through /proc/sys."""
    for step in plan_mounts(spec):
        if step.destination == "/dev" and step.flags & sc.MS_RDONLY and not step.is_bind:
            sys.mount(step.source, "/dev", step.fstype, step.flags | sc.MS_REMOUNT, step.data)
    if spec.linux.rootfs_propagation:
        sys.mount("", "/", "", PROPAGATION_OPTIONS[spec.linux.rootfs_propagation], "")
    if spec.root.readonly:
        readonly_root(sys)


def protect_paths(sys: Syscalls, spec: Spec) -> None:
    for path in spec.linux.readonly_paths:
        readonly_path(sys, path)
    for path in spec.linux.masked_paths:
        mask_path(sys, path)


def readonly_path(sys: Syscalls, path: str) -> None:
    try:
        sys.mount(path, path, "", sc.MS_BIND | sc.MS_REC, "")
    except FileNotFoundError:
        return
    sys.mount(path, path, "", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC, "")


def mask_path(sys: Syscalls, path: str) -> None:
    """A file is hidden behind /dev/null, a directory behind an empty read-only tmpfs."""
    try:
        sys.mount("/dev/null", path, "", sc.MS_BIND, "")
    except FileNotFoundError:
        return
    except NotADirectoryError:
        sys.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, "")


def readonly_root(sys: Syscalls) -> None:
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
    try:
        sys.mount("", "/", "", flags, "")
        return
    except PermissionError:
        pass
    # A remount may not drop flags the mount already has (nosuid, nodev, ...): keep them.
    vfs = os.statvfs("/")
    for st_flag, ms_flag in _STATVFS_KEEP:
        if vfs.f_flag & st_flag:
            flags |= ms_flag
    sys.mount("", "/", "", flags, "")


def set_sysctls(spec: Spec) -> None:
    for key, value in spec.linux.sysctl:
        path = "/proc/sys/" + key.replace(".", "/")
        if ".." in key.split("."):
            raise SetupFailed(f"sysctl {key!r}: invalid name")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise SetupFailed(f"sysctl {key}={value}: {exc.strerror or exc}") from exc
