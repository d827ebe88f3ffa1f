"""Container lifecycle: create, start, kill, delete, run — runc's semantics.

``create`` validates everything before touching the host (nothing is created for bad input),
then makes the state directory, the exec fifo and the cgroup, forks the init
(:mod:`pydeskd.runtime.init`) and waits on the sync pipe until the init is ready; on any
failure it undoes all of it. ``start`` opens the fifo, which releases the init into execve.
``start``, ``kill`` and ``delete`` import nothing heavy: the state file and /proc are enough,
except where the cgroup or hooks are involved.

Must never act on a process that is not the container's: the init's pid is always checked
against its recorded start time.
"""

from __future__ import annotations

import os
import time

from pydeskd.runtime import log
from pydeskd.runtime import state as st
from pydeskd.runtime.errors import (
    ContainerExists,
    ContainerNotFound,
    IllegalState,
    RuntimeFailure,
    SetupFailed,
    SpecError,
)

# typing costs start-up time on every call; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
    "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}
STOP_TIMEOUT = 10.0


def parse_signal(text: str) -> int:
    """SIGTERM, TERM or 15 (and SIGRTMIN+n) -> the number; raises RuntimeFailure."""
    name = text.upper().removeprefix("SIG")
    if text.isdigit():
        number = int(text)
    elif name in SIGNALS:
        number = SIGNALS[name]
    elif name in ("RTMIN", "RTMAX") or (name[:6] in ("RTMIN+", "RTMAX-") and name[6:].isdigit()):
        # runc 1.1 knows no real-time names; we take kill(1)'s RTMIN+n and RTMAX-n.
        offset = int(name[6:] or 0)
        number = 34 + offset if name.startswith("RTMIN") else 64 - offset
    else:
        raise RuntimeFailure(f"unknown signal {text!r}")
    if not 0 < number <= 64:
        raise RuntimeFailure(f"invalid signal {text!r}")
    return number


def _created_now() -> str:
    now = time.time_ns()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 1_000_000_000))
            + f".{now % 1_000_000_000:09d}Z")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return


def _remove_dir(path: str) -> None:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        _unlink(os.path.join(path, name))
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return


# ------------------------------------------------------------------ create


def load_bundle(bundle: str) -> tuple[dict[str, Any], Any, str]:
    """(config.json data, Spec, absolute rootfs); raises SpecError for anything unusable."""
    import json

    from pydeskd.runtime.spec import parse_spec

    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file (is {bundle} an OCI bundle?)") from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: {exc}") from None
    spec = parse_spec(config)
    if spec.process is None:
        raise SpecError("process: required to create a container")
    if spec.linux.namespace("mount") is None:
        raise SpecError("linux.namespaces: a mount namespace is required")
    if spec.hostname and not _new_namespace(spec, "uts"):
        raise SpecError("hostname: setting it needs a new uts namespace")
    if spec.domainname and not _new_namespace(spec, "uts"):
        raise SpecError("domainname: setting it needs a new uts namespace")
    if spec.linux.sysctl and not (_new_namespace(spec, "ipc") or _new_namespace(spec, "network")):
        for key, _ in spec.linux.sysctl:
            raise SpecError(f"linux.sysctl: {key} needs a new ipc or network namespace")
    rootfs = os.path.normpath(os.path.join(bundle, spec.root.path))
    if not os.path.isdir(rootfs):
        raise SpecError(f"root.path: {rootfs} does not exist or is not a directory")
    for ns in spec.linux.namespaces:
        if ns.path and not os.path.exists(ns.path):
            raise SpecError(f"linux.namespaces: {ns.type} path {ns.path} does not exist")
    return config, spec, rootfs


def _new_namespace(spec: Any, kind: str) -> bool:
    ns = spec.linux.namespace(kind)
    return ns is not None and not ns.path


def create(root: str, container_id: str, bundle: str, *, pid_file: str | None = None,
           console_socket: str | None = None, no_pivot: bool = False,
           preserve_fds: int = 0) -> dict[str, Any]:
    """Creates the container; returns its saved state. The init is our child (we are its
    subreaper) until we exit. Raises a RuntimeFailure and leaves nothing behind on error."""
    from pydeskd.runtime import init as init_mod
    from pydeskd.runtime import syscalls as sc
    from pydeskd.runtime.cgroups import open_cgroup
    from pydeskd.runtime.devices import cgroup_rules

    st.check_id(container_id)
    bundle = os.path.abspath(bundle)
    config, spec, rootfs = load_bundle(bundle)
    if spec.process.terminal and not console_socket:
        raise SpecError("process.terminal is true: --console-socket is required")
    if console_socket and not spec.process.terminal:
        raise SpecError("--console-socket given but process.terminal is false")
    cgroup = open_cgroup(spec.linux.cgroups_path, container_id)
    resources = spec.linux.resources._replace(devices=cgroup_rules(spec))

    os.makedirs(root, mode=0o711, exist_ok=True)
    state_dir = st.container_dir(root, container_id)
    try:
        os.mkdir(state_dir, 0o711)
    except FileExistsError:
        raise ContainerExists(f"container with id exists: {container_id}") from None

    fifo = os.path.abspath(os.path.join(state_dir, st.EXEC_FIFO))  # the init chdirs
    me = st.proc_stat(os.getpid())
    # Provisional until the init is ready: what a `delete` needs if we are killed half-way.
    data: dict[str, Any] = {
        "ociVersion": spec.oci_version, "id": container_id, "pid": 0, "start_time": 0,
        "bundle": bundle, "rootfs": rootfs, "created": _created_now(),
        "annotations": dict(spec.annotations), "cgroup": None, "config": config,
        "provisional": True, "runtime": [os.getpid(), me[1] if me else None], "pids": [],
    }

    def track(pid: int) -> None:
        stat = st.proc_stat(pid)
        if stat is not None:
            data["pids"].append([pid, stat[1]])
            st.save(state_dir, data, sync=False)  # survives our death, not a power loss

    cgroup_made = False
    console_fd = -1
    init_pid = 0
    chan = None
    try:
        os.mkfifo(fifo, 0o622)
        os.chmod(fifo, 0o622)  # mkfifo applies the umask; the init may write as another user
        cgroup.create(resources)
        cgroup_made = True
        data["cgroup"] = cgroup.to_state()
        st.save(state_dir, data, sync=False)
        if console_socket:
            from pydeskd.runtime import console

            console_fd = console.connect(console_socket)
        has_parent_hooks = bool(spec.hooks.prestart or spec.hooks.create_runtime)
        cfg = init_mod.InitConfig(container_id=container_id, bundle=bundle, rootfs=rootfs,
                                  spec=spec, fifo=fifo, no_pivot=no_pivot,
                                  console_fd=console_fd, parent_hooks=has_parent_hooks,
                                  preserve_fds=preserve_fds)
        # The init's first child exits at once: as subreaper we inherit the init and can
        # wait for it (run) or kill it (failure); our own subreaper inherits it when we exit.
        sc.LinuxSyscalls().prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        to_parent = os.pipe()
        to_child = os.pipe()
        first = os.fork()
        if first == 0:
            os.close(to_parent[0])
            os.close(to_child[1])
            # As runc: relative paths of the spec (bind sources) are the bundle's. A failure
            # must not unwind into the parent's code: the parent reports the early exit.
            try:
                os.chdir(bundle)
            except OSError:
                os._exit(1)
            init_mod.first_child(cfg, cgroup, init_mod.Channel(to_child[0], to_parent[1]))
        os.close(to_parent[1])
        os.close(to_child[0])
        chan = init_mod.Channel(to_parent[0], to_child[1])
        track(first)
        try:
            cgroup.add_process(first)  # the first child must be in it before it unshares
        except BaseException:
            os.kill(first, 9)
            _reap(first)
            raise
        chan.send({"type": "joined"})
        init_pid = _handshake(chan, first, spec, container_id, bundle, track=track)
        if console_fd >= 0:
            os.close(console_fd)
            console_fd = -1
        stat = st.proc_stat(init_pid)
        if stat is None or stat[0] in ("Z", "X"):
            raise SetupFailed("container init exited during create")
        for key in ("provisional", "runtime", "pids"):
            del data[key]
        data.update(pid=init_pid, start_time=stat[1], created=_created_now())
        st.save(state_dir, data)
        if pid_file:
            # Atomic (rename) but not fsync'd, as runc: it only matters while we run.
            st.write_atomic(os.path.abspath(pid_file), str(init_pid).encode(), sync=False)
        data["_dir"] = state_dir
        return data
    except BaseException:
        if init_pid > 0:
            _kill_and_reap(init_pid)
        if chan is not None:
            chan.close()
        if console_fd >= 0:
            os.close(console_fd)
        if cgroup_made:
            try:
                cgroup.destroy()
            except RuntimeFailure as exc:
                log.warning(f"removing the cgroup of {container_id}: {exc}")
        _remove_dir(state_dir)
        raise


def _handshake(chan: Any, first: int, spec: Any, container_id: str, bundle: str, *,
               track: Any) -> int:
    """Follows the sync pipe until the init is ready; returns its pid (in our namespace)."""
    init_pid = 0
    try:
        while True:
            message = chan.recv()
            if message is None:
                raise SetupFailed("container init exited before it was ready")
            kind = message.get("type")
            if kind == "pid":
                init_pid = int(message["pid"])
                track(init_pid)
                _reap(first)
            elif kind == "hooks":
                if not init_pid:
                    raise SetupFailed("container init asked for hooks before its pid was known")
                from pydeskd.runtime.hooks import run_hooks

                hook_state = {"ociVersion": spec.oci_version, "id": container_id,
                              "status": "creating", "pid": init_pid, "bundle": bundle,
                              "annotations": dict(spec.annotations)}
                run_hooks(spec.hooks.prestart, "prestart", hook_state, track)
                run_hooks(spec.hooks.create_runtime, "createRuntime", hook_state, track)
                chan.send({"type": "resume"})
            elif kind == "ready":
                chan.close()
                return init_pid
            elif kind == "error":
                raise SetupFailed(str(message.get("message", "container init failed")))
    except BaseException:
        if init_pid:
            _kill_and_reap(init_pid)
        _reap(first)
        raise


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        return  # already reaped


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Not (yet, or no longer) our child: wait until it is gone or a zombie.
            stat = st.proc_stat(pid)
            done = pid if stat is None or stat[0] in ("Z", "X") else 0
        if done:
            return
        time.sleep(0.005)


# ------------------------------------------------------------------ start, kill, delete


def start(root: str, container_id: str) -> dict[str, Any]:
    """Releases the created init into execve; returns the state. IllegalState unless created."""
    data = st.load(root, container_id)
    current = st.status(data)
    if current == st.STOPPED:
        raise IllegalState("cannot start a container that has stopped")
    if current == st.CREATING:
        raise IllegalState("cannot start a container that is still being created")
    if current != st.CREATED:
        raise IllegalState("cannot start an already running container")
    fifo = os.path.join(data["_dir"], st.EXEC_FIFO)
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise IllegalState("cannot start an already running container") from None
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll(100):
            if not st.init_alive(data):
                raise RuntimeFailure("container init exited before start")
        token = os.read(fd, 1)
    finally:
        os.close(fd)
    if token != b"0":
        raise RuntimeFailure("container init exited before start")
    _unlink(fifo)
    _hooks_warn(data, "poststart", "running")
    return data


def _hooks_warn(data: dict[str, Any], kind: str, status: str) -> None:
    if not data.get("config", {}).get("hooks", {}).get(kind):
        return
    from pydeskd.runtime.hooks import run_hooks_warn
    from pydeskd.runtime.spec import parse_spec

    hooks = getattr(parse_spec(data["config"]).hooks, kind)
    hook_state = st.oci_state(data, status)
    run_hooks_warn(hooks, kind, hook_state, log.warning)


def kill(root: str, container_id: str, signal: int, all_processes: bool = False) -> None:
    data = st.load(root, container_id)
    if st.status(data) in (st.STOPPED, st.CREATING) or int(data.get("pid", 0)) <= 0:
        raise IllegalState("container not running")
    if all_processes:
        from pydeskd.runtime.cgroups import restore_cgroup

        for pid in restore_cgroup(data["cgroup"]).pids():
            try:
                os.kill(pid, signal)
            except ProcessLookupError:
                continue
        return
    try:
        os.kill(int(data["pid"]), signal)
    except ProcessLookupError:
        raise IllegalState("container not running") from None


def delete(root: str, container_id: str, force: bool = False) -> None:
    """Removes a stopped (or created) container; --force kills a running one first."""
    path = st.container_dir(root, container_id)
    try:
        data = st.load(root, container_id)
    except ContainerNotFound:
        # A create killed before its first state: nothing but the directory and the fifo.
        if os.path.isdir(path):
            _remove_dir(path)
            return
        if force:
            return
        raise
    except RuntimeFailure as exc:
        # Neither its processes nor its cgroup can be found from garbage: removing the
        # directory would hide them. Only --force does, and says so.
        if not force:
            raise RuntimeFailure(f"{exc} (delete --force removes the state directory, "
                                 "but not the container's processes or cgroup)") from None
        log.warning(f"{exc}: removing the state directory only")
        _remove_dir(path)
        return
    if st.is_provisional(data):
        _delete_provisional(data, force)
        return
    current = st.status(data)
    if current in (st.RUNNING, st.PAUSED) and not force:
        raise IllegalState(f"cannot delete container {container_id} that is not stopped: "
                           f"{current}")
    from pydeskd.runtime.cgroups import restore_cgroup

    cgroup = restore_cgroup(data["cgroup"])
    if current != st.STOPPED:
        if current == st.PAUSED:
            cgroup.thaw()
        _kill_and_reap(int(data["pid"]))
    if not _own_pid_namespace(data.get("config")):
        # Sharing a pid namespace, the container's processes outlive its init: as runc, they
        # die with it. With its own, the kernel has killed them with the init; anything else
        # in the cgroup was not started by the container and is left alone.
        _kill_cgroup(cgroup)
    try:
        cgroup.destroy()
    except RuntimeFailure as exc:
        log.warning(f"container's cgroup is not empty: {exc}")
    _hooks_warn(data, "poststop", st.STOPPED)
    _remove_dir(data["_dir"])


def _delete_provisional(data: dict[str, Any], force: bool) -> None:
    """Cleans up after a create that did not finish: the processes it recorded, everything
    in a cgroup it made, the cgroup, the state directory."""
    if st.status(data) == st.CREATING:
        if not force:
            raise IllegalState(f"cannot delete container {data['id']} that is being created")
        runtime = data.get("runtime") or [0, None]
        _kill_recorded([runtime])
    _kill_recorded(data.get("pids") or [])
    if data.get("cgroup"):
        from pydeskd.runtime.cgroups import restore_cgroup

        cgroup = restore_cgroup(data["cgroup"])
        if cgroup.owns_leaf():
            _kill_cgroup(cgroup)
        try:
            cgroup.destroy()
        except RuntimeFailure as exc:
            log.warning(f"container's cgroup is not empty: {exc}")
    _remove_dir(data["_dir"])


def _kill_recorded(pids: list[Any]) -> None:
    for pid, start_time in pids:
        if st.same_process(int(pid), start_time):
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                continue


def _own_pid_namespace(config: Any) -> bool:
    try:
        namespaces = config["linux"]["namespaces"]
        return any(ns.get("type") == "pid" and not ns.get("path") for ns in namespaces)
    except (KeyError, TypeError, AttributeError):
        return False  # unknown: assume shared, which kills more of the container's own


def _kill_cgroup(cgroup: Any) -> None:
    for _ in range(100):
        pids = cgroup.pids()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                continue
        time.sleep(0.01)


def pause(root: str, container_id: str) -> None:
    data = st.load(root, container_id)
    current = st.status(data)
    if current not in (st.RUNNING, st.CREATED):
        raise IllegalState(f"container not running or created: {current}")
    from pydeskd.runtime.cgroups import restore_cgroup

    restore_cgroup(data["cgroup"]).freeze()


def resume(root: str, container_id: str) -> None:
    data = st.load(root, container_id)
    if st.status(data) != st.PAUSED:
        raise IllegalState("container not paused")
    from pydeskd.runtime.cgroups import restore_cgroup

    restore_cgroup(data["cgroup"]).thaw()


# ------------------------------------------------------------------ run


def run(root: str, container_id: str, bundle: str, *, pid_file: str | None = None,
        console_socket: str | None = None, no_pivot: bool = False, detach: bool = False,
        preserve_fds: int = 0) -> int:
    """create + start, then (unless detached) wait and delete; returns the exit status
    (128+n when killed by signal n). Signals we receive are passed on to the container."""
    if not detach and not console_socket and _wants_terminal(bundle):
        return _run_with_terminal(root, container_id, bundle, pid_file=pid_file,
                                  no_pivot=no_pivot, preserve_fds=preserve_fds)
    data = create(root, container_id, bundle, pid_file=pid_file,
                  console_socket=console_socket, no_pivot=no_pivot, preserve_fds=preserve_fds)
    pid = int(data["pid"])
    try:
        start(root, container_id)
    except BaseException:
        delete(root, container_id, force=True)
        raise
    if detach:
        return 0
    return _wait_and_delete(root, container_id, pid)


def _wants_terminal(bundle: str) -> bool:
    import json

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            return json.loads(f.read()).get("process", {}).get("terminal") is True
    except (OSError, ValueError, AttributeError):
        return False  # create reports what is wrong with the bundle


def _run_with_terminal(root: str, container_id: str, bundle: str, *, pid_file: str | None,
                       no_pivot: bool, preserve_fds: int) -> int:
    """Foreground run of a terminal container: we receive the pty and relay it (as runc)."""
    from pydeskd.runtime import relay

    os.makedirs(root, mode=0o711, exist_ok=True)
    with relay.console_listener(root) as (path, server):
        data = create(root, container_id, bundle, pid_file=pid_file, console_socket=path,
                      no_pivot=no_pivot, preserve_fds=preserve_fds)
        try:
            master = relay.receive_master(server)
        except BaseException:
            delete(root, container_id, force=True)
            raise
    pid = int(data["pid"])
    try:
        start(root, container_id)
    except BaseException:
        os.close(master)
        delete(root, container_id, force=True)
        raise

    def exited() -> int | None:
        waited, status = os.waitpid(pid, os.WNOHANG)
        return None if waited == 0 else _exit_code(status)

    code = relay.relay(master, exited)
    delete(root, container_id, force=True)
    return code


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _wait_and_delete(root: str, container_id: str, pid: int) -> int:
    import signal

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return  # it has just exited: waitpid below returns

    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                   signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
        signal.signal(signum, forward)
    while True:
        waited, status = os.waitpid(pid, 0)
        if waited == pid:
            break
    delete(root, container_id, force=True)
    return _exit_code(status)
