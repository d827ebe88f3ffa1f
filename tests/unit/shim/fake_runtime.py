"""A stand-in OCI runtime for the shim's unit tests: runc's command line, no isolation, no root.

It runs ``process.args`` of the bundle as a plain process (on a pty it sends over the console
socket when ``process.terminal`` is true), which is enough to drive every path of the shim
(stdio, terminals, exits, reaping, exec, errors) where root is not available. It says so: it
is not a runtime, and only the integration tests (runc, pydesk-runc) show real containers.

    create --bundle B --pid-file P ID   forks the process, which waits on a fifo until start
    start ID / kill ID SIG / delete [--force] ID / exec --detach --process F --pid-file P ID
Errors go to ``--log`` as JSON lines (level "error"), like runc with ``--log-format json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

VALUE_OPTIONS = {"--root", "--log", "--log-format", "--bundle", "--pid-file", "--process",
                 "--console-socket"}


def main(argv: list[str]) -> int:
    opts: dict[str, str] = {}
    flags: set[str] = set()
    words: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in VALUE_OPTIONS:
            opts[arg] = next(args)
        elif arg.startswith("--"):
            flags.add(arg)
        else:
            words.append(arg)
    root = Path(opts.get("--root", "/tmp/fake-runtime"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        command, cid = words[0], words[1]
        state = root / f"{cid}.json"
        if command == "create":
            return create(root, cid, Path(opts["--bundle"]), Path(opts["--pid-file"]), opts)
        if not state.exists():
            raise RuntimeError(f"container {cid} does not exist")
        info: dict[str, Any] = json.loads(state.read_text())
        if command == "start":
            fifo = root / f"{cid}.fifo"
            with fifo.open("wb") as f:  # the waiting process opened it for reading
                f.write(b"go")
            fifo.unlink()
        elif command == "kill":
            os.kill(info["pid"], int(words[2]) if len(words) > 2 else signal.SIGTERM)
        elif command == "delete":
            if alive(info["pid"]) and "--force" not in flags and started(root, cid):
                raise RuntimeError(f"container {cid} is running")
            if alive(info["pid"]):
                os.kill(info["pid"], signal.SIGKILL)
            state.unlink()
            (root / f"{cid}.fifo").unlink(missing_ok=True)
        elif command == "exec":
            process = json.loads(Path(opts["--process"]).read_text())
            if bool(process.get("terminal")) != ("--console-socket" in opts):
                raise RuntimeError("terminal and --console-socket go together")
            slave = send_pty(opts["--console-socket"]) if process.get("terminal") else -1
            pid = os.fork()
            if pid == 0:
                if slave >= 0:
                    use_terminal(slave)
                exec_args(process["args"])
            if slave >= 0:
                os.close(slave)
            Path(opts["--pid-file"]).write_text(str(pid))
        else:
            raise RuntimeError(f"unknown command {command}")
        return 0
    except Exception as e:
        fail(opts.get("--log"), str(e))
        return 1


def create(root: Path, cid: str, bundle: Path, pid_file: Path, opts: dict[str, str]) -> int:
    if (root / f"{cid}.json").exists():
        raise RuntimeError(f"container with id exists: {cid}")
    config = json.loads((bundle / "config.json").read_text())
    process = config["process"]
    if bool(process.get("terminal")) != ("--console-socket" in opts):
        raise RuntimeError("terminal and --console-socket go together")
    slave = send_pty(opts["--console-socket"]) if process.get("terminal") else -1
    fifo = root / f"{cid}.fifo"
    os.mkfifo(fifo)
    pid = os.fork()
    if pid == 0:  # waits for start, then becomes the container's process
        if slave >= 0:
            use_terminal(slave)
        with fifo.open("rb") as f:
            f.read()
        exec_args(process["args"])
    if slave >= 0:
        os.close(slave)
    (root / f"{cid}.json").write_text(json.dumps({"pid": pid}))
    pid_file.write_text(str(pid))
    return 0  # our exit orphans the process: the shim (a subreaper) inherits it


def send_pty(console_socket: str) -> int:
    """Opens a pty, sends its master over the console socket (SCM_RIGHTS); returns the slave."""
    import socket

    master, slave = os.openpty()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(console_socket)
        socket.send_fds(sock, [b"/dev/ptmx"], [master])
    os.close(master)
    return slave


def use_terminal(slave: int) -> None:
    import fcntl
    import termios

    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)


def exec_args(args: list[str]) -> None:
    try:
        os.execvp(args[0], args)
    except OSError:
        os._exit(127)


def started(root: Path, cid: str) -> bool:
    return not (root / f"{cid}.fifo").exists()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def fail(log: str | None, message: str) -> None:
    print(f"fake-runtime: {message}", file=sys.stderr)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"level": "error", "msg": message}) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
