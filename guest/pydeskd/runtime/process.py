"""Turning the current process into the container's process: the ``process`` part of the spec.

Used by the container init and by ``exec``, in runc's order: rlimits and oom_score_adj while
still privileged; no_new_privs; seccomp early when no_new_privs is off (loading it then needs
CAP_SYS_ADMIN); bounding set, keep-caps, groups/gid/uid, capability sets; cwd; then, as late as
possible, seccomp when no_new_privs is on, and execve. Must never run in the runtime's own
(host) process: only in a child that is about to become the container's process.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat

from pydeskd.runtime import syscalls as sc
from pydeskd.runtime.errors import SetupFailed, SpecError
from pydeskd.runtime.spec import Process, Seccomp, User
from pydeskd.runtime.syscalls import Syscalls

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from pydeskd.runtime.seccomp import Filter


def apply_rlimits(process: Process) -> None:
    for rl in process.rlimits:
        kind = getattr(resource, rl.type, None)
        if kind is None:
            raise SpecError(f"rlimit {rl.type} is not known on this system")
        try:
            resource.setrlimit(kind, (rl.soft, rl.hard))
        except (OSError, ValueError) as exc:
            raise SetupFailed(f"setrlimit {rl.type} soft={rl.soft} hard={rl.hard}: {exc}") from exc


def apply_oom_score_adj(process: Process) -> None:
    if process.oom_score_adj is None:
        return
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(process.oom_score_adj))


def user_home(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of uid in the container's passwd file, "/" if none (as runc)."""
    try:
        with open(passwd, errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip()]
    except OSError:
        return []


def lookup_user(text: str, umask: int | None = None, passwd: str = "/etc/passwd",
                group: str = "/etc/group") -> User:
    """``exec -u``: USER[:GROUP] by name or number, read from the container's files as runc
    does: a number need not exist; without GROUP the gid is the user's and the groups that
    list the user by name are added."""
    name, _, group_text = text.partition(":")
    users = [e for e in _entries(passwd) if len(e) >= 4]
    entry = next((e for e in users if e[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((e for e in users if e[2] == name), None)
    if entry is None and not name.isdigit():
        raise SetupFailed(f"unable to find user {name}: no matching entries in passwd file")
    uid = int(entry[2]) if entry else int(name)
    gid = int(entry[3]) if entry else 0
    extra: list[int] = []
    groups = [e for e in _entries(group) if len(e) >= 3]
    if group_text:
        found = next((g for g in groups if g[0] == group_text), None)
        if found is None and not group_text.isdigit():
            raise SetupFailed(f"unable to find group {group_text}: no matching entries in "
                              "group file")
        gid = int(found[2]) if found else int(group_text)
    elif entry is not None:
        extra = [int(g[2]) for g in groups if len(g) >= 4 and entry[0] in g[3].split(",")
                 and g[2].isdigit() and int(g[2]) != gid]
    return User(uid=uid, gid=gid, umask=umask, additional_gids=tuple(extra))


def process_env(process: Process, extra: tuple[str, ...] = ()) -> list[str]:
    """The environment: the spec's (later entries win), plus HOME from passwd if unset."""
    merged: dict[str, str] = {}
    for entry in (*process.env, *extra):
        name, _, value = entry.partition("=")
        merged[name] = value
    if "HOME" not in merged:
        merged["HOME"] = user_home(process.user.uid)
    return [f"{k}={v}" for k, v in merged.items()]


def find_executable(name: str, env: list[str]) -> str:
    """args[0] as execve wants it: a path as is, else looked up in the env's PATH."""
    if "/" in name:
        candidates = [name]
    else:
        path = next((e[5:] for e in env if e.startswith("PATH=")), "")
        candidates = [os.path.join(d or ".", name) for d in path.split(":")] if path else []
    for candidate in candidates:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o111:
            return candidate
    if "/" in name:
        raise SetupFailed(f"exec: {name!r}: no such executable file")
    raise SetupFailed(f"exec: {name!r}: executable file not found in $PATH")


def fix_stdio_ownership(uid: int, gid: int) -> None:
    """Hands our stdio to the container's user, so that it can reopen /proc/self/fd/N (runc)."""
    try:
        null_rdev = os.stat("/dev/null").st_rdev
    except OSError:
        null_rdev = -1
    for fd in (0, 1, 2):
        try:
            info = os.fstat(fd)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == null_rdev:
                continue
            if info.st_uid != uid or info.st_gid != gid:
                os.fchown(fd, uid, gid)
        except OSError:
            continue  # a closed fd, or one we may not change (e.g. on a read-only fs)


def preload(terminal: bool, hooks: bool, seccomp: bool) -> None:
    """Imports now what is needed later: after pivot_root (or setns into the container's mount
    namespace) the runtime's modules and libseccomp.so are out of reach."""
    import signal

    from pydeskd.runtime import capabilities

    del capabilities, signal
    if terminal:
        from pydeskd.runtime import console

        del console
    if hooks:
        from pydeskd.runtime import hooks as hooks_module

        del hooks_module
    if seccomp:
        import ctypes

        from pydeskd.runtime import seccomp as seccomp_module

        del seccomp_module
        # dlopen() later finds the library already loaded, by name, without the filesystem.
        with contextlib.suppress(OSError):  # load_seccomp reports a missing library
            _PRELOADED.append(ctypes.CDLL("libseccomp.so.2"))


_PRELOADED: list[object] = []


def build_seccomp(profile: Seccomp) -> Filter:
    """The built, not yet loaded, filter: its ``load()`` comes later (see init.py)."""
    from pydeskd.runtime.seccomp import build_seccomp as build

    return build(profile)


def load_seccomp(profile: Seccomp) -> None:
    from pydeskd.runtime.seccomp import load_seccomp as load

    load(profile)


def become_user(sys: Syscalls, process: Process) -> None:
    """Bounding set, then uid/gid/groups with keep-caps, then the capability sets."""
    caps = process.capabilities
    user = process.user
    if caps is not None:
        from pydeskd.runtime.capabilities import drop_bounding

        drop_bounding(sys, caps.bounding)
    fix_stdio_ownership(user.uid, user.gid)
    sys.prctl(sc.PR_SET_KEEPCAPS, 1)
    try:
        os.setgroups(list(user.additional_gids))
        os.setgid(user.gid)
        os.setuid(user.uid)
    except OSError as exc:
        raise SetupFailed(f"set user {user.uid}:{user.gid}: {exc.strerror or exc}") from exc
    sys.prctl(sc.PR_SET_KEEPCAPS, 0)
    if caps is not None:
        from pydeskd.runtime.capabilities import apply_sets

        # The kernel raises an ambient capability only if it is permitted and inheritable;
        # runc skips the others with a warning rather than failing, and so do we.
        ambient = tuple(c for c in caps.ambient if c in caps.permitted and c in caps.inheritable)
        apply_sets(sys, caps._replace(ambient=ambient))


def change_cwd(sys: Syscalls, process: Process, before_user: bool) -> bool:
    """chdir to the cwd; before the user switch a permission error is retried after it."""
    try:
        os.chdir(process.cwd)
    except PermissionError:
        if before_user:
            return False
        raise SetupFailed(f"chdir to cwd {process.cwd!r}: permission denied") from None
    except OSError as exc:
        raise SetupFailed(f"chdir to cwd {process.cwd!r}: {exc.strerror or exc}") from exc
    return True


def finalize(sys: Syscalls, process: Process, seccomp: Seccomp | None) -> None:
    """Everything up to (not including) the late seccomp and execve."""
    if process.no_new_privileges:
        sys.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    elif seccomp is not None:
        load_seccomp(seccomp)
    done = change_cwd(sys, process, before_user=True)
    become_user(sys, process)
    if not done:
        change_cwd(sys, process, before_user=False)


def reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive execve: give the
    container's process the default dispositions it would get from runc."""
    import signal

    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)


def preserve_fds(count: int) -> None:
    """Makes fds 3 .. 3+count-1 (--preserve-fds, e.g. socket activation) survive execve."""
    for fd in range(3, 3 + count):
        try:
            os.set_inheritable(fd, True)
        except OSError as exc:
            raise SetupFailed(f"--preserve-fds: fd {fd}: {exc.strerror}") from exc


def close_fds_from(first: int, keep: tuple[int, ...] = ()) -> None:
    """Closes every fd >= first except keep: nothing of the runtime leaks into the container."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(first, 1024))
    for fd in fds:
        if fd >= first and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                continue
