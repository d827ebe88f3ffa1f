"""The shim's process: spawned by :mod:`pydeskd.shim.starting`, it forks once and then serves.

``main(argv)``, argv as :func:`pydeskd.shim.starting.serve_argv` makes it. The first process
only forks and exits (its parent reaps it at once); the child is the shim: a child subreaper
(the container's processes are reparented to it), reparented itself to init, in the session
its first process opened. It reports on the pipe once the container is created and the control
socket serves, or the runtime's error after removing what it made, and exits when the container
is deleted.

The fork comes first, before any thread or import: forking a process with threads is unsafe.
Every container start waits for ``runtime create`` (~40 ms), so without a terminal the shim
spawns it next (``os.posix_spawn``, argv made by the caller), with nothing imported but ``os``
and ``ctypes`` (for the subreaper flag, which must be set before the runtime exits), and
imports the rest (~20 ms) while the runtime works. With a terminal,
:func:`pydeskd.shim.launch.spawn_create` does it (the console socket needs the socket module).
It must never write to the caller's stdio: stdin/stdout are /dev/null, stderr is ``shim.log``.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing costs start-up time (~2 ms): mypy only, as in pydeskd.runtime
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from pydeskd.shim.forkserver import ForkClient
    from pydeskd.shim.launch import ShimConfig
    from pydeskd.shim.paths import StatePaths

PR_SET_CHILD_SUBREAPER = 36


# Reset to their defaults in the runtime, as subprocess does (Python ignores them itself).
SIGPIPE, SIGXFSZ = 13, 25


class _Early:
    """``runtime create`` as spawned before any import, and the shim's ends of its stdio."""

    def __init__(self, pid: int, argv: list[str], since: float, offset: int,
                 ours: dict[str, int]) -> None:
        self.pid, self.argv, self.since, self.offset, self.ours = pid, argv, since, offset, ours


def main(argv: list[str]) -> NoReturn:
    # The layout of pydeskd.shim.starting.serve_argv.
    ready_w, mode, bundle, count = int(argv[0]), argv[1], argv[2], int(argv[3])
    create, config = argv[4:4 + count], argv[4 + count]
    if os.fork() != 0:
        os._exit(0)  # the caller reaps this; the shim below is reparented to init
    os.set_inheritable(ready_w, False)  # the runtime (and the container) must not hold it
    early: _Early | OSError | None = None
    try:
        _set_subreaper()
        if mode != "tty":
            early = _spawn_create(create, bundle, mode == "stdin", config)
    except OSError as e:
        early = e
    forks = None
    if os.path.basename(create[0]) == "pydesk-runc":
        # Before any thread (forkserver.py): docker exec then runs pydesk-runc without a new
        # interpreter. After the create's spawn, so the container's start does not wait for it.
        from pydeskd.shim import forkserver

        forks = forkserver.start()
    _serve(config, ready_w, early, forks)


def _spawn_create(argv: list[str], bundle: str, stdin: bool, config: str) -> _Early:
    """``runtime create`` with pipes for stdio, as launch.spawn_create does. Raises OSError
    (nothing started then)."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    theirs = {"stdin": null, "stdout": null, "stderr": null}
    ours: dict[str, int] = {}
    try:
        if stdin:
            theirs["stdin"], ours["stdin"] = os.pipe()
        ours["stdout"], theirs["stdout"] = os.pipe()
        ours["stderr"], theirs["stderr"] = os.pipe()
        state_dir = argv[argv.index("--log") + 1].rpartition("/")[0]
        try:
            offset = os.stat(state_dir + "/runtime.log").st_size
        except FileNotFoundError:
            offset = 0
        since = time.monotonic()
        os.chdir(bundle)  # posix_spawn has no cwd (3.11); single-threaded here
        try:
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, theirs["stdin"], 0),
                (os.POSIX_SPAWN_DUP2, theirs["stdout"], 1),
                (os.POSIX_SPAWN_DUP2, theirs["stderr"], 2)], setsigdef=(SIGPIPE, SIGXFSZ))
        finally:
            os.chdir("/")
    except BaseException:
        for fd in ours.values():
            os.close(fd)
        raise
    finally:
        for fd in set(theirs.values()):
            os.close(fd)
    return _Early(pid, argv, since, offset, ours)


def _serve(config_json: str, ready_w: int, early: _Early | OSError | None,
           forks: ForkClient | None) -> NoReturn:
    """The shim process. Never returns: exits when deleted, or when creation failed."""
    import json
    from pathlib import Path

    from pydeskd.shim import diag
    from pydeskd.shim.children import Children
    from pydeskd.shim.launch import CreateFailed, Launch, ShimConfig, abandon, spawn_create
    from pydeskd.shim.paths import StatePaths, atomic_write

    raw = json.loads(config_json)

    config = ShimConfig(
        id=raw["id"], bundle=Path(raw["bundle"]), state_dir=Path(raw["state_dir"]),
        runtime=Path(raw["runtime"]), runtime_root=Path(raw["runtime_root"]),
        stdin=raw["stdin"], log_path=Path(raw["log_path"]) if raw["log_path"] else None,
        log_max_size=raw["log_max_size"], log_max_files=raw["log_max_files"])
    paths = StatePaths(config.state_dir)
    code = 1
    launch: Launch | None = None
    shim = None
    ready = False
    try:
        os.chdir("/")
        os.umask(0o022)
        diag.set_debug(raw["debug"])
        children = Children()
        if isinstance(early, _Early):
            launch = Launch(children.adopt(early.pid, early.argv), early.since, False,
                            stdin_fd=early.ours.get("stdin"), stdout_fd=early.ours["stdout"],
                            stderr_fd=early.ours["stderr"], log_offset=early.offset)
        children.start()
        if isinstance(early, OSError):
            _fail(ready_w, str(early), paths, raw, config)
        if early is None:
            try:
                launch = spawn_create(config, children)
            except (CreateFailed, OSError) as e:
                _fail(ready_w, str(e), paths, raw, config)
        assert launch is not None  # adopted, or spawned by spawn_create
        # The rest of the shim is imported while the runtime works (see launch.py).
        from pydeskd.shim import control
        from pydeskd.shim.server import Shim

        shim = Shim(config, children, forks)
        try:
            shim.create(launch)
        except CreateFailed as e:  # the Shim removed what it made
            _fail(ready_w, str(e), paths, raw, config)
        try:
            listener = control.listen(paths.socket)
        except (OSError, ValueError) as e:
            shim.abandon()
            _fail(ready_w, str(e), paths, raw, config)
        # shim.json first (a caller may read it as soon as start returns), without fsync: it
        # describes a live process, which a crash ends anyway; fsync costs ~15 ms here.
        atomic_write(paths.shim_json, {
            "pid": os.getpid(), "id": config.id, "bundle": str(config.bundle),
            "runtime": str(config.runtime), "runtime_root": str(config.runtime_root),
            "socket": str(paths.socket)}, durable=False)
        control.serve(shim, listener)
        _report(ready_w, {"ok": True, "socket": str(paths.socket)})
        ready = True
        shim.done.wait()
        listener.close()
        code = 0
    except BaseException as e:
        import traceback

        traceback.print_exc()
        if not ready:  # a bug, not the runtime's refusal: still, leave nothing behind
            if shim is not None:
                shim.abandon()
            elif launch is not None:
                abandon(launch, config, children)
            _remove_state(paths, raw, config)
            _report(ready_w, {"ok": False, "error": f"the shim failed: {e!r}"})
    finally:
        sys.stderr.flush()
        os._exit(code)


def _fail(ready_w: int, message: str, paths: StatePaths, raw: dict[str, Any],
          config: ShimConfig) -> NoReturn:
    """Creation failed (nothing of the container is left): report, remove our files, exit."""
    _remove_state(paths, raw, config)  # before the report: the caller finds it gone
    _report(ready_w, {"ok": False, "error": message})
    sys.stderr.flush()
    os._exit(1)


def _set_subreaper() -> None:
    """Orphans of the container (its init, once ``runtime create`` exits) become our children.
    ctypes directly: pydeskd.runtime.syscalls would import more before the runtime's spawn."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def _report(fd: int, obj: dict[str, object]) -> None:
    import contextlib
    import json

    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(obj).encode())
    with contextlib.suppress(OSError):
        os.close(fd)


def _remove_state(paths: StatePaths, raw: dict[str, Any], config: ShimConfig) -> None:
    """What a failed start removes: the state dir if the caller made it, else only what is new
    (and the log file if it is new)."""
    import contextlib
    import shutil

    if config.log_path is not None and raw["log_made"]:
        with contextlib.suppress(OSError):
            config.log_path.unlink()
    if raw["made_dir"]:
        shutil.rmtree(paths.root, ignore_errors=True)
        return
    keep = frozenset(raw["keep"])
    for path in paths.root.iterdir():
        if path.name not in keep:
            with contextlib.suppress(OSError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
