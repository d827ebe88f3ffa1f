"""``exec``: a new process in a running container, joining its namespaces and cgroup.

The caller enters the init's pid namespace (it takes effect for children) and forks; the child
waits until the caller has put it in the container's cgroup, enters the init's other
namespaces (mount last), becomes the process of the spec (user, capabilities, rlimits,
no_new_privs, the container's seccomp profile, a pty with ``--tty``) and execs. Failures
before execve come back over a close-on-exec pipe, so the caller knows whether execve
happened. Must never run anything in the container that is not the requested process.
"""

from __future__ import annotations

import os

from pydeskd.runtime import state as st
from pydeskd.runtime.errors import IllegalState, SetupFailed, SpecError
from pydeskd.runtime.spec import Capabilities, Process, Spec, parse_spec

# typing and json cost start-up time on every exec; annotations only need typing for mypy,
# and json is imported only for a JSON process file (the shim hands pydesk-runc marshal).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


def load_process_file(path: str) -> Process:
    """A runtime-spec process as JSON, or, for a file named ``*.marshal``, pydesk's private
    fast form of the same object (written by pydesk-shim, never by users)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".marshal"):
            import marshal

            raw = marshal.loads(data)
        else:
            import json

            raw = json.loads(data)
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise SpecError(f"--process {path}: {exc}") from None
    spec = parse_spec({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": raw})
    assert spec.process is not None
    return spec.process


def process_from_options(spec: Spec, args: list[str], opts: dict[str, Any]) -> Process:
    """The container's process with runc exec's overrides (args, cwd, env, user, caps, tty)."""
    if opts.get("process"):
        return load_process_file(opts["process"])
    if not args:
        raise SpecError("exec: a command or --process FILE is required")
    base = spec.process
    assert base is not None
    # --user names are resolved in the container's /etc/passwd, once inside it (_child).
    user = base.user
    for gid in opts.get("additional-gids", []):
        if not gid.isdigit():
            raise SpecError(f"--additional-gids {gid!r}: expected a number")
    caps = base.capabilities
    if opts.get("cap"):
        extra = tuple(opts["cap"])
        caps = caps or Capabilities()
        caps = Capabilities(*(tuple(dict.fromkeys((*getattr(caps, k), *extra))) for k in
                              ("bounding", "effective", "inheritable", "permitted", "ambient")))
    for entry in opts.get("env", []):
        if "=" not in entry:
            raise SpecError(f"--env {entry!r}: expected NAME=VALUE")
    return Process(
        args=tuple(args), cwd=opts.get("cwd") or base.cwd,
        env=(*base.env, *opts.get("env", [])), terminal=bool(opts.get("tty")),
        user=user, capabilities=caps, rlimits=base.rlimits,
        no_new_privileges=base.no_new_privileges or bool(opts.get("no-new-privs")),
        oom_score_adj=None, apparmor_profile=base.apparmor_profile,
    )


def parse_count(text: str) -> int:
    if not text.isdigit():
        raise SpecError(f"--preserve-fds {text!r}: expected a number")
    return int(text)


def exec_command(root: str, container_id: str, args: list[str], opts: dict[str, Any]) -> int:
    from pydeskd.runtime import syscalls as sc
    from pydeskd.runtime.cgroups import restore_cgroup

    data = st.load(root, container_id)
    current = st.status(data)
    if current == st.STOPPED:
        raise IllegalState("cannot exec in a stopped container")
    if current == st.CREATING:  # a provisional state: no init pid, maybe no cgroup yet
        raise IllegalState("cannot exec in a container that is still being created")
    if current == st.PAUSED and not opts.get("ignore-paused"):
        raise IllegalState("cannot exec in a paused container (thaw it or --ignore-paused)")
    spec = parse_spec(data["config"])
    process = process_from_options(spec, args, opts)
    console_socket = opts.get("console-socket")
    if process.terminal and not console_socket:
        raise SpecError("exec with a terminal needs --console-socket")
    if console_socket and not process.terminal:
        raise SpecError("--console-socket given but no terminal was asked for (--tty)")
    cgroup = restore_cgroup(data["cgroup"])
    pid = int(data["pid"])
    preserve = parse_count(opts.get("preserve-fds", "0"))
    user_text = "" if opts.get("process") else opts.get("user", "")
    extra_gids = tuple(int(g) for g in opts.get("additional-gids", []))

    joins: list[tuple[int, int]] = []
    for ns in spec.linux.namespaces:
        path = f"/proc/{pid}/ns/{sc.NAMESPACE_FILES[ns.type]}"
        joins.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), sc.NAMESPACE_FLAGS[ns.type]))
    joins.sort(key=lambda j: j[1] == sc.CLONE_NEWNS)  # mount last, as runc
    if not st.init_alive(data):  # the fds above must belong to the container's init
        raise IllegalState("cannot exec in a stopped container")
    console_fd = -1
    if console_socket:
        from pydeskd.runtime import console

        console_fd = console.connect(console_socket)
    sys = sc.LinuxSyscalls()
    for fd, flag in joins:
        if flag == sc.CLONE_NEWPID:
            sys.setns(fd, flag)
    go_read, go_write = os.pipe()
    err_read, err_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go_write)
        os.close(err_read)
        _child(sys, spec, process, joins, console_fd=console_fd, go_read=go_read,
               err_write=err_write, preserve=preserve, user_text=user_text,
               extra_gids=extra_gids)
    os.close(go_read)
    os.close(err_write)
    for fd, _ in joins:
        os.close(fd)
    if console_fd >= 0:
        os.close(console_fd)
    try:
        cgroup.add_process(child)
        os.write(go_write, b"1")
    except BaseException:
        os.kill(child, 9)
        os.waitpid(child, 0)
        raise
    finally:
        os.close(go_write)
    failure = b""
    while chunk := os.read(err_read, 65536):
        failure += chunk
    os.close(err_read)
    if failure:
        os.waitpid(child, 0)
        raise SetupFailed(failure.decode(errors="replace"))
    if opts.get("pid-file"):
        st.write_atomic(os.path.abspath(opts["pid-file"]), str(child).encode(), sync=False)
    if opts.get("detach"):
        return 0
    return _wait(child)


def _wait(child: int) -> int:
    import signal

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            return

    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                   signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
        signal.signal(signum, forward)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _child(sys: Any, spec: Spec, process: Process, joins: list[tuple[int, int]], *,
           console_fd: int, go_read: int, err_write: int, preserve: int, user_text: str,
           extra_gids: tuple[int, ...]) -> NoReturn:
    """The exec'd process until execve. Never returns."""
    from pydeskd.runtime import syscalls as sc

    try:
        from pydeskd.runtime import process as proc

        proc.preload(process.terminal, False, spec.linux.seccomp is not None)
        if process.terminal:
            from pydeskd.runtime import console
        # The filter is built (libseccomp, ~10 ms for Docker's profile) while the caller puts
        # this process in the cgroup, which waits for an RCU grace period (8-16 ms on cgroup
        # v1); it is loaded later, in the order runc loads it. A build error is reported after
        # the go, as every other failure, so the caller reads it rather than a broken pipe.
        seccomp_filter: Any = None
        build_error: BaseException | None = None
        try:
            if spec.linux.seccomp is not None:
                seccomp_filter = proc.build_seccomp(spec.linux.seccomp)
        except BaseException as exc:
            build_error = exc
        if os.read(go_read, 1) != b"1":
            os._exit(1)
        os.close(go_read)
        if build_error is not None:
            raise build_error
        for fd, flag in joins:
            if flag != sc.CLONE_NEWPID:
                sys.setns(fd, flag)
            os.close(fd)
        os.setsid()
        if user_text or extra_gids:
            user = (proc.lookup_user(user_text, process.user.umask) if user_text
                    else process.user)
            if extra_gids:
                user = user._replace(additional_gids=(*user.additional_gids, *extra_gids))
            process = process._replace(user=user)
        proc.apply_rlimits(process)
        proc.apply_oom_score_adj(process)
        if process.terminal:
            size = process.console_size
            slave = console.send_new_pty(console_fd, size.height if size is not None else None,
                                         size.width if size is not None else None)
            os.close(console_fd)
            console.attach_slave(slave)
        os.umask(process.user.umask if process.user.umask is not None else 0o022)
        if seccomp_filter is not None and not process.no_new_privileges:
            seccomp_filter.load()  # where finalize would load it: before the user switch
        proc.finalize(sys, process, None)
        env = proc.process_env(process)
        path = proc.find_executable(process.args[0], env)
        proc.close_fds_from(3 + preserve, keep=(err_write,))
        proc.preserve_fds(preserve)
        proc.reset_signals()  # before seccomp, which may deny rt_sigaction
        if seccomp_filter is not None and process.no_new_privileges:
            seccomp_filter.load()
        os.execve(path, list(process.args), dict(e.split("=", 1) for e in env))
    except BaseException as exc:
        message = str(exc) if isinstance(exc, SetupFailed | OSError) else (
            f"{type(exc).__name__}: {exc}")
        os.write(err_write, message.encode(errors="replace") or b"exec failed")
    os._exit(127)
