"""``pydesk-shim``: the command line. ``start`` detaches a shim for one container.

The foreground ``start`` forks; the child starts a new session and forks again, so the shim is
in its own session, not a child of whoever ran ``start`` (killing that, even with -9, leaves
the shim and its container alone). The shim reports back over a pipe once the container is
created and the control socket serves; ``start`` then prints the socket path and exits 0, or
prints the runtime's error and exits 1 with nothing left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pydeskd.shim.paths import MAX_SOCKET_PATH, StatePaths, atomic_write
from pydeskd.shim.runtime import DEFAULT_ROOT, default_runtime

if TYPE_CHECKING:  # imported by `start` only, not by --help
    from pydeskd.shim.launch import ShimConfig

PR_SET_CHILD_SUBREAPER = 36

DESCRIPTION = """\
pydesk-shim: one process per container (containerd-shim's role). It runs an OCI runtime by
runc's command line (pydesk-runc by default; runc or crun by --runtime), keeps the container's
stdio, writes its log in Docker's json-file format, records its exit status in the state dir
(exit.json) and serves a control socket (<state-dir>/shim.sock; methods and event order in
pydeskd.shim.protocol, Python client in pydeskd.shim.client)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pydesk-shim", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser(
        "start", help="create a container under a new detached shim",
        description="Creates the container (runtime create) under a new shim, detached in its "
        "own session, and prints the control socket path once it serves. The container's init "
        "waits until the 'start' method is called on the socket.")
    start.add_argument("--id", required=True, help="container id (passed to the runtime)")
    start.add_argument("--bundle", required=True, type=Path, help="OCI bundle directory")
    start.add_argument("--state-dir", required=True, type=Path,
                       help="the shim's directory (socket, pid files, exit.json, log); "
                       "created if missing, removed by the 'delete' method")
    start.add_argument("--runtime", type=Path, default=None,
                       help=f"OCI runtime executable (default: {default_runtime()})")
    start.add_argument("--runtime-root", type=Path, default=DEFAULT_ROOT,
                       help="the runtime's --root (default: %(default)s)")
    start.add_argument("--stdin", action="store_true",
                       help="give the container a stdin pipe (fed by attach), else /dev/null")
    start.add_argument("--log-path", type=Path, default=None,
                       help="json-file log (default: <state-dir>/container.log)")
    start.add_argument("--log-max-size", type=int, default=0, metavar="BYTES",
                       help="rotate the log once it reaches this size (0: never)")
    start.add_argument("--log-max-files", type=int, default=1, metavar="N",
                       help="log files kept, the current one included (default: 1)")
    start.add_argument("--debug", action="store_true",
                       help="log the shim's own debug messages to <state-dir>/shim.log")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _start(args)
    except _UsageError as e:
        print(f"pydesk-shim: {e}", file=sys.stderr)
        code = 2
    if argv is None:
        # As a command: skip the interpreter's teardown (~8 ms measured here), which every
        # container start would wait for. Nothing is left to clean up: the shim is detached.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


class _UsageError(Exception):
    pass


def _start(args: argparse.Namespace) -> int:
    from pydeskd.shim.launch import ShimConfig

    bundle, state_dir = args.bundle.absolute(), args.state_dir.absolute()
    if not (bundle / "config.json").is_file():
        raise _UsageError(f"no config.json in bundle {bundle}")
    if args.log_max_size < 0 or args.log_max_files < 1:
        raise _UsageError("--log-max-size must be >= 0 and --log-max-files >= 1")
    paths = StatePaths(state_dir)
    if len(str(paths.console_socket(999))) > MAX_SOCKET_PATH:
        raise _UsageError(f"state dir path too long for unix sockets: {state_dir}")
    if _serving(paths.socket):
        raise _UsageError(f"a shim already serves {paths.socket}")
    config = ShimConfig(
        id=args.id, bundle=bundle, state_dir=state_dir,
        runtime=(args.runtime or default_runtime()).absolute(),
        runtime_root=args.runtime_root.absolute(), stdin=args.stdin,
        log_path=args.log_path.absolute() if args.log_path else None,
        log_max_size=args.log_max_size, log_max_files=args.log_max_files)
    made_dir = not state_dir.exists()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # On failure the shim removes what it made and only that.
    keep = frozenset(os.listdir(state_dir))
    log_made = config.log_path is not None and not config.log_path.exists()

    ready_r, ready_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the intermediate: new session, fork the shim, exit at once
        try:
            os.close(ready_r)
            os.setsid()
            if os.fork() == 0:
                _daemon(config, ready_w, _Cleanup(made_dir, keep, log_made), args.debug)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.waitpid(pid, 0)
    with os.fdopen(ready_r, "rb") as ready:
        report = ready.read()
    try:
        result = json.loads(report)
    except ValueError:
        result = {"ok": False, "error": "the shim died before it was ready (see "
                  f"{paths.shim_log})" if paths.shim_log.exists() else "the shim died"}
    if result.get("ok"):
        print(result["socket"])
        return 0
    print(f"pydesk-shim: {result.get('error')}", file=sys.stderr)
    return 1


def _serving(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class _Cleanup:
    """What a failed start removes: the state dir if it made it, else only new entries."""

    made_dir: bool
    keep: frozenset[str]
    log_made: bool


def _daemon(config: ShimConfig, ready_w: int, cleanup: _Cleanup, debug: bool) -> None:
    """The shim process. Never returns: exits when deleted, or when creation failed."""
    from pydeskd.shim import diag
    from pydeskd.shim.children import Children
    from pydeskd.shim.launch import CreateFailed, Launch, abandon, spawn_create

    paths = StatePaths(config.state_dir)
    code = 1
    launch: Launch | None = None
    shim = None
    ready = False
    try:
        os.chdir("/")
        os.umask(0o022)
        _redirect_stdio(paths)
        os.closerange(3, ready_w)
        os.closerange(ready_w + 1, 1 << 16)
        diag.set_debug(debug)
        _set_subreaper()
        children = Children()
        children.start()
        try:
            launch = spawn_create(config, children)
        except (CreateFailed, OSError) as e:
            _fail(ready_w, str(e), paths, cleanup, config.log_path)
        # The rest of the shim is imported while the runtime works (see launch.py).
        from pydeskd.shim import control
        from pydeskd.shim.server import Shim

        shim = Shim(config, children)
        try:
            shim.create(launch)
        except CreateFailed as e:  # the Shim removed what it made
            _fail(ready_w, str(e), paths, cleanup, config.log_path)
        try:
            listener = control.listen(paths.socket)
        except (OSError, ValueError) as e:
            shim.abandon()
            _fail(ready_w, str(e), paths, cleanup, config.log_path)
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
            _remove_state(paths, cleanup, config.log_path)
            _report(ready_w, {"ok": False, "error": f"the shim failed: {e!r}"})
    finally:
        sys.stderr.flush()
        os._exit(code)


def _fail(ready_w: int, message: str, paths: StatePaths, cleanup: _Cleanup,
          log_path: Path | None) -> NoReturn:
    """Creation failed (nothing of the container is left): report, remove our files, exit."""
    _remove_state(paths, cleanup, log_path)  # before the report: the caller finds it gone
    _report(ready_w, {"ok": False, "error": message})
    sys.stderr.flush()
    os._exit(1)


def _redirect_stdio(paths: StatePaths) -> None:
    # The caller may read our stdout to EOF: the shim must not keep it open.
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(paths.shim_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    for fd in (null, err):
        if fd > 2:
            os.close(fd)


def _set_subreaper() -> None:
    from pydeskd.runtime.syscalls import LinuxSyscalls

    # Orphans of the container (its init, once `runtime create` exits) become our children.
    LinuxSyscalls().prctl(PR_SET_CHILD_SUBREAPER, 1)


def _report(fd: int, obj: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(obj).encode())
    with contextlib.suppress(OSError):
        os.close(fd)


def _remove_state(paths: StatePaths, cleanup: _Cleanup, log_path: Path | None) -> None:
    import shutil

    if log_path is not None and cleanup.log_made:
        with contextlib.suppress(OSError):
            log_path.unlink()
    if cleanup.made_dir:
        shutil.rmtree(paths.root, ignore_errors=True)
        return
    for path in paths.root.iterdir():
        if path.name not in cleanup.keep:
            with contextlib.suppress(OSError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()


if __name__ == "__main__":
    sys.exit(main())
