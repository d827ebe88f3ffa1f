"""The shim's process: spawned by :mod:`pydeskd.shim.starting`, it forks once and then serves.

``main([ready_fd, config_json])``. The first process only forks and exits (its parent reaps it
at once); the child is the shim: a child subreaper (the container's processes are reparented
to it), reparented itself to init, in the session its first process opened. It reports on
``ready_fd`` once the container is created and the control socket serves, or the runtime's error
after removing what it made, and exits when the container is deleted.

The fork comes first, before any thread or import: forking a process with threads is unsafe.
Every container start waits for this process, so it imports only what the next step needs
(:mod:`pydeskd.shim.launch` first, the server while the runtime works). It must never write to
the caller's stdio: stdin/stdout are /dev/null, stderr is ``shim.log``.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # typing costs start-up time (~2 ms): mypy only, as in pydeskd.runtime
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from pydeskd.shim.launch import ShimConfig
    from pydeskd.shim.paths import StatePaths

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> NoReturn:
    ready_w, config = int(argv[0]), json.loads(argv[1])
    if os.fork() != 0:
        os._exit(0)  # the caller reaps this; the shim below is reparented to init
    _serve(config, ready_w)


def _serve(raw: dict[str, Any], ready_w: int) -> NoReturn:
    """The shim process. Never returns: exits when deleted, or when creation failed."""
    from pathlib import Path

    from pydeskd.shim import diag
    from pydeskd.shim.children import Children
    from pydeskd.shim.launch import CreateFailed, Launch, ShimConfig, abandon, spawn_create
    from pydeskd.shim.paths import StatePaths, atomic_write

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
        _set_subreaper()
        children = Children()
        children.start()
        try:
            launch = spawn_create(config, children)
        except (CreateFailed, OSError) as e:
            _fail(ready_w, str(e), paths, raw, config)
        # The rest of the shim is imported while the runtime works (see launch.py).
        from pydeskd.shim import control
        from pydeskd.shim.server import Shim

        shim = Shim(config, children)
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
    from pydeskd.runtime.syscalls import LinuxSyscalls

    # Orphans of the container (its init, once `runtime create` exits) become our children.
    LinuxSyscalls().prctl(PR_SET_CHILD_SUBREAPER, 1)


def _report(fd: int, obj: dict[str, object]) -> None:
    import contextlib

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
