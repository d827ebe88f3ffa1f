"""The ``pydeskd`` entry point: configuration, logging, the daemon, the API front, signals.

What it is for: ``pydeskd -H unix:///run/pydesk/docker.sock --data-root ...`` as dockerd is run.
A configuration error prints dockerd's message and exits 1 before anything is created.
SIGTERM/SIGINT: stop accepting, let requests finish (a few seconds), close the services,
remove the sockets and the pidfile, exit 0.

What it must never do: start serving with a configuration it could not fully read, or leave a
pidfile or socket behind on a clean exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread

from pydeskd.api.app import create_app, hijack_routes
from pydeskd.api.server import HttpFront
from pydeskd.containerd.errors import ContainerdError
from pydeskd.daemon.config import ConfigError, DaemonConfig
from pydeskd.daemon.daemon import Daemon

log = logging.getLogger("pydeskd")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR, "fatal": logging.CRITICAL}
SHUTDOWN_GRACE = 5.0
WORKER_THREADS = 256


def setup_logging(config: DaemonConfig) -> None:
    level = logging.DEBUG if config.debug else _LEVELS[config.log_level]
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def write_pidfile(path: Path) -> None:
    """Refuse to start over a live daemon's pidfile; replace a stale one atomically."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(path.read_text().strip())
        if pid != os.getpid() and Path(f"/proc/{pid}").exists():
            raise ConfigError(f"pid file found, ensure pydeskd is not running or delete {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_fork_hook: list[bool] = []


def install_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop``. asyncio delivers them through the signal wakeup fd, which
    a forked child of this process shares (pyroute2 forks one per network namespace it works
    in, and stops it with SIGTERM): such a child gets default dispositions and no wakeup fd
    before it can take a signal (they are blocked across the fork), or its SIGTERM would
    reach this loop and stop the daemon."""
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    if not _fork_hook:
        os.register_at_fork(before=_block_stop_signals, after_in_parent=_restore_mask,
                            after_in_child=_forget_stop_signals)
        _fork_hook.append(True)


_saved_mask = threading.local()  # signal masks are per thread, and so are forks


def _block_stop_signals() -> None:
    _saved_mask.value = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def _restore_mask() -> None:
    mask: set[int | signal.Signals] | None = getattr(_saved_mask, "value", None)
    if mask is not None:
        _saved_mask.value = None
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _forget_stop_signals() -> None:
    with contextlib.suppress(ValueError):  # not the main thread: nothing was set in it
        signal.set_wakeup_fd(-1)
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
    _restore_mask()  # a SIGTERM that came meanwhile is delivered now, by default: it ends us


async def serve(daemon: Daemon, stop: asyncio.Event | None = None) -> None:
    """Serve the API on the configured hosts until ``stop`` is set or a signal arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    install_stop_signals(loop, stop)
    # Routes that block (waits, log follows, pulls) hold a worker thread each: anyio's default
    # of 40 would let 40 slow requests stall every other sync route.
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    front = HttpFront(create_app(daemon), hijack_routes())
    try:
        for path in daemon.config.unix_sockets:
            await front.listen_unix(path)
            log.info("API listening on unix://%s", path)
        for host, port in daemon.config.tcp_hosts:
            bound = await front.listen_tcp(host, port)
            log.info("API listening on tcp://%s:%d", host, bound)
        log.info("pydeskd ready")
        await stop.wait()
        log.info("shutting down")
        daemon.events.close()  # event streams end now rather than at the grace deadline
    finally:
        await front.shutdown(SHUTDOWN_GRACE)
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def run(argv: Sequence[str]) -> int:
    try:
        config = DaemonConfig.load(argv)
    except ConfigError as exc:
        sys.stderr.write(f"pydeskd: {exc}\n")
        return 1
    setup_logging(config)
    try:
        if config.pidfile is not None:
            write_pidfile(config.pidfile)
        daemon = Daemon.create(config)
        daemon.restore()
    except (ConfigError, ContainerdError, OSError) as exc:
        log.error("failed to start daemon: %s", exc)
        if config.pidfile is not None:
            _remove_own_pidfile(config.pidfile)
        return 1
    try:
        asyncio.run(serve(daemon))
    except (ContainerdError, OSError) as exc:
        log.error("failed to serve: %s", exc)
        return 1
    finally:
        daemon.close()
        if config.pidfile is not None:
            _remove_own_pidfile(config.pidfile)
    return 0


def _remove_own_pidfile(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


def main() -> None:
    sys.exit(run(sys.argv[1:]))
