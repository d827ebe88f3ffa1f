"""The container's init: the forked processes that become the container, and their sync pipe.

``create`` forks :func:`first_child`, which joins the cgroup, enters namespaces that have a
``path``, unshares the new ones, and forks again so that the grandchild (:func:`container_init`)
is PID 1 of the new pid namespace; the first child reports the grandchild's pid and exits.
The init then builds the root filesystem, asks ``create`` to run prestart/createRuntime hooks,
runs createContainer hooks, switches root, becomes the process of the spec, builds (does not
load) a late seccomp filter, reports "ready" and blocks opening the exec fifo until ``start``;
then it loads that filter, runs startContainer hooks (filtered, as in runc) and execs.

Every message on the sync pipe is one JSON line: {"type": "pid"|"hooks"|"ready"|"error"} from
the children, {"type": "resume"} from ``create``. These functions never return: they end in
execve or ``os._exit``, so no code of the caller ever runs twice.
"""

from __future__ import annotations

import json
import os
import sys

from pydeskd.runtime import syscalls as sc
from pydeskd.runtime.errors import RuntimeFailure, SetupFailed
from pydeskd.runtime.spec import Spec

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from typing import Any, NamedTuple, NoReturn

    from pydeskd.runtime.syscalls import Syscalls
else:
    from pydeskd.runtime.record import NamedTuple


class Channel:
    """JSON lines over a pair of pipe fds (each message is far below PIPE_BUF: atomic)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buf = b""

    def send(self, message: dict[str, Any]) -> None:
        os.write(self.write_fd, json.dumps(message).encode() + b"\n")

    def recv(self) -> dict[str, Any] | None:
        """The next message, or None at end of file (every writer closed or exited)."""
        while b"\n" not in self._buf:
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                continue


class InitConfig(NamedTuple):
    """What the init needs, fixed before the fork."""

    container_id: str
    bundle: str
    rootfs: str
    spec: Spec
    fifo: str
    no_pivot: bool = False
    console_fd: int = -1
    parent_hooks: bool = False  # create runs prestart/createRuntime hooks: sync for them
    preserve_fds: int = 0  # fds 3.. of the caller passed on to the container


def namespace_fds(spec: Spec) -> list[tuple[int, int]]:
    """(fd, CLONE_* flag) for each namespace to join, opened before any is entered."""
    joins = []
    for ns in spec.linux.namespaces:
        if ns.path:
            try:
                fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise SetupFailed(f"namespace {ns.type} {ns.path}: {exc.strerror}") from exc
            joins.append((fd, sc.NAMESPACE_FLAGS[ns.type]))
    # The mount namespace last: after it, the other paths may not be reachable any more.
    joins.sort(key=lambda j: j[1] == sc.CLONE_NEWNS)
    return joins


def unshare_flags(spec: Spec) -> int:
    flags = 0
    for ns in spec.linux.namespaces:
        if not ns.path:
            flags |= sc.NAMESPACE_FLAGS[ns.type]
    return flags


def cgroup_view(spec: Spec, version: int) -> Any:
    """The CgroupView for the "cgroup" mount, read while still in the host's cgroup ns."""
    from pydeskd.runtime.rootfs import CgroupView

    if not any(m.type in ("cgroup", "cgroup2") for m in spec.mounts):
        return None
    from pydeskd.runtime.cgroups import host_hierarchies
    from pydeskd.runtime.cgroups.layout import own_cgroups, read_text

    own = own_cgroups(read_text("/proc/self/cgroup"))
    namespaced = spec.linux.namespace("cgroup") is not None
    hierarchies = host_hierarchies()
    if version == 2:
        top = hierarchies[0].mountpoint
        return CgroupView(2, namespaced, (), top + own.get("", "/").rstrip("/"))
    views = []
    for h in hierarchies:
        if h.version != 1 or not h.options:
            continue
        path = own.get(h.options[0], "/")
        views.append((h.name, ",".join(h.options), h.mountpoint + path.rstrip("/")))
    return CgroupView(1, namespaced, tuple(views))


def _fail(chan: Channel, exc: BaseException) -> NoReturn:
    message = (str(exc) if isinstance(exc, RuntimeFailure | OSError)
               else f"{type(exc).__name__}: {exc}")
    if os.environ.get("PYDESK_RUNC_DEBUG"):
        import traceback

        message += "\n" + "".join(traceback.format_exception(exc))
    try:
        chan.send({"type": "error", "message": message})
    except OSError:
        os.write(2, f"pydesk-runc init: {message}\n".encode())
    os._exit(1)


def first_child(cfg: InitConfig, cgroup: Any, chan: Channel) -> NoReturn:
    """Runs in the first fork: namespaces and the pid-1 fork, once ``create`` has moved us
    into the cgroup ("joined"). Never returns."""
    try:
        # The first write to a v1 cgroup.procs waits for an RCU grace period (~15 ms): the
        # imports the init needs are done meanwhile, here, and the init inherits them.
        from pydeskd.runtime import process as proc
        from pydeskd.runtime import rootfs

        del rootfs
        spec = cfg.spec
        assert spec.process is not None
        proc.preload(spec.process.terminal,
                     bool(spec.hooks.create_container or spec.hooks.start_container),
                     spec.linux.seccomp is not None)
        joined = chan.recv()
        if joined is None or joined.get("type") != "joined":
            os._exit(1)
        view = cgroup_view(cfg.spec, cgroup.version)
        sys = sc.LinuxSyscalls()
        for fd, flag in namespace_fds(cfg.spec):
            sys.setns(fd, flag)
            os.close(fd)
        sys.unshare(unshare_flags(cfg.spec))
        pid = os.fork()
        if pid == 0:
            container_init(cfg, view, sys, chan)
        chan.send({"type": "pid", "pid": pid})
    except BaseException as exc:
        _fail(chan, exc)
    os._exit(0)


def _hook_state(cfg: InitConfig, status: str) -> dict[str, Any]:
    return {"ociVersion": cfg.spec.oci_version, "id": cfg.container_id, "status": status,
            "pid": os.getpid(), "bundle": cfg.bundle,
            "annotations": dict(cfg.spec.annotations)}


def container_init(cfg: InitConfig, view: Any, sys: Syscalls, chan: Channel) -> NoReturn:
    """PID 1 of the container until it execs the user's process. Never returns."""
    spec = cfg.spec
    process = spec.process
    assert process is not None
    try:
        # Imported (and preloaded) by first_child already: these are cache hits.
        from pydeskd.runtime import process as proc
        from pydeskd.runtime import rootfs

        _exit_on_signals()
        os.setsid()
        proc.apply_rlimits(process)
        proc.apply_oom_score_adj(process)
        rootfs.prepare(sys, spec, cfg.rootfs, view)
        if cfg.parent_hooks:
            chan.send({"type": "hooks"})
            reply = chan.recv()
            if reply is None or reply.get("type") != "resume":
                os._exit(1)
        if spec.hooks.create_container:
            from pydeskd.runtime.hooks import run_hooks

            run_hooks(spec.hooks.create_container, "createContainer",
                      _hook_state(cfg, "created"))
        fifo = os.open(cfg.fifo, os.O_PATH | os.O_CLOEXEC)
        rootfs.pivot(sys, cfg.rootfs, cfg.no_pivot)
        if process.terminal:
            _terminal(sys, cfg)
        rootfs.finalize(sys, spec)
        os.umask(process.user.umask if process.user.umask is not None else 0o022)
        if spec.hostname:
            sys.sethostname(spec.hostname)
        if spec.domainname:
            sys.setdomainname(spec.domainname)
        rootfs.set_sysctls(spec)
        rootfs.protect_paths(sys, spec)
        proc.finalize(sys, process, spec.linux.seccomp)
        env = proc.process_env(process)
        path = proc.find_executable(process.args[0], env)
        # Built now so that a profile libseccomp refuses fails `create`; loaded after start.
        late_filter = (proc.build_seccomp(spec.linux.seccomp)
                       if process.no_new_privileges and spec.linux.seccomp is not None else None)
        chan.send({"type": "ready"})
        chan.close()
    except BaseException as exc:
        _fail(chan, exc)
    try:
        # Blocks until `start` opens the fifo for reading: the container's "created" state.
        _release_start(f"/proc/self/fd/{fifo}")
        os.close(fifo)
        proc.close_fds_from(3 + cfg.preserve_fds)
        proc.preserve_fds(cfg.preserve_fds)
        proc.reset_signals()  # before seccomp, which may deny rt_sigaction
        # As runc 1.1 (which loads it before "ready"): startContainer hooks run under the filter.
        if late_filter is not None:
            late_filter.load()
        if spec.hooks.start_container:
            from pydeskd.runtime.hooks import run_hooks

            run_hooks(spec.hooks.start_container, "startContainer", _hook_state(cfg, "created"))
        os.execve(path, list(process.args), dict(e.split("=", 1) for e in env))
    except BaseException as exc:
        os.write(2, f"pydesk-runc init: {exc}\n".encode(errors="replace"))
    os._exit(127)


def _release_start(fifo: str) -> None:
    """Writes the byte `start` waits for, and returns once `start` has read it.

    An open for writing returns once *a* reader has opened the fifo, and that may be a stray
    one (anything that opens and closes files in the state directory): it can close before we
    write (EPIPE), or after our byte went into the pipe unread. Neither is `start`: we wait
    for the next reader rather than run the container's process, or die half-made."""
    while True:
        fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
            if _consumed(fd):
                return
        except BrokenPipeError:
            continue
        finally:
            os.close(fd)


FIONREAD = 0x541B
"""ioctl: bytes unread in a pipe (asm-generic: x86_64 and aarch64; termios is not built in)."""


def _consumed(fd: int) -> bool:
    """True once the byte in the pipe was read; False when every reader left without reading
    it (poll reports POLLERR on a pipe's write end that has no reader left)."""
    # Only built-in modules here: the init runs this after pivot_root, where no Python
    # library is to be found (fcntl and select are compiled into the interpreter).
    import fcntl
    import select

    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
    while True:
        reader_left = bool(poller.poll(1))  # waits up to 1 ms for the reader to read or leave
        # Asked after the poll: `start` reads, then closes (the poll sees it gone) -- the
        # byte's fate decides, not the reader's absence.
        if int.from_bytes(fcntl.ioctl(fd, FIONREAD, bytes(4)), sys.byteorder) == 0:
            return True
        if reader_left:
            return False


def _exit_on_signals() -> None:
    """As PID 1 of its namespace the init would ignore every signal it has no handler for, so
    `kill` of a created container would do nothing. runc's init (Go) exits with status 2 on
    SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGABRT and SIGSYS and ignores the rest: so does ours.
    execve resets these handlers: the user's process starts with the default dispositions."""
    import signal

    def die(_signum: int, _frame: object) -> None:
        os._exit(2)

    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT,
                   signal.SIGABRT, signal.SIGSYS):
        signal.signal(signum, die)


def _terminal(sys: Syscalls, cfg: InitConfig) -> None:
    """The pty: master to the console socket, slave on /dev/console and as our stdio."""
    from pydeskd.runtime import console
    from pydeskd.runtime.rootfs import make_target

    process = cfg.spec.process
    assert process is not None
    size = process.console_size
    slave = console.send_new_pty(cfg.console_fd, size.height if size is not None else None,
                                 size.width if size is not None else None)
    os.close(cfg.console_fd)
    make_target("/dev/console", as_file=True)
    sys.mount(slave, "/dev/console", "bind", sc.MS_BIND, "")
    console.attach_slave(slave)
