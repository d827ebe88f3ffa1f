"""``pydesk-shim``: the command line. ``start`` detaches a shim for one container.

``start`` does what :func:`pydeskd.shim.client.start_shim` does in the daemon's process
(:mod:`pydeskd.shim.starting`): the shim runs in its own session, not a child of whoever ran
``start`` (killing that, even with -9, leaves the shim and its container alone). Once the
container is created and the control socket serves, ``start`` prints the socket path and exits
0; else it prints the runtime's error and exits 1 (2 for refused arguments), nothing left behind.
This module must never be on the daemon's path: it is the command line only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydeskd.shim.runtime import DEFAULT_ROOT, default_runtime

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
    code = _start(args)
    if argv is None:
        # As a command: skip the interpreter's teardown (~8 ms measured here), which every
        # container start would wait for. Nothing is left to clean up: the shim is detached.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _start(args: argparse.Namespace) -> int:
    from pydeskd.shim.starting import ShimStartError, ShimUsageError, start

    try:
        path = start(args.id, args.bundle, args.state_dir, runtime=args.runtime,
                     runtime_root=args.runtime_root, stdin=args.stdin, log_path=args.log_path,
                     log_max_size=args.log_max_size, log_max_files=args.log_max_files,
                     debug=args.debug)
    except ShimUsageError as e:
        print(f"pydesk-shim: {e}", file=sys.stderr)
        return 2
    except ShimStartError as e:
        print(f"pydesk-shim: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
