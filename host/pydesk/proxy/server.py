"""The host API socket: a unix listener relaying every connection to the guest daemon.

What it is for: :class:`ApiProxy` owns ``~/.pydesk/run/docker.sock`` (a path argument here):
made mode 0600 in a parent made 0700, a stale socket replaced only when nothing answers on it;
one thread per client connection (:mod:`pydesk.proxy.connection`), each with its own upstream
stream from the injected opener; container creates rewritten by :mod:`pydesk.proxy.rewrite`.

What it must never do: listen anywhere but its unix socket, remove a socket another live process
serves or a file that is not a socket, or outlive ``close()`` with a thread or connection.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import socket
import stat
import threading
import time
from pathlib import Path
from types import TracebackType

from pydesk.proxy.connection import Connection
from pydesk.proxy.rewrite import BindResolver, rewrite_create_body
from pydesk.proxy.streams import Opener

log = logging.getLogger(__name__)


_SUN_PATH_MAX = 108  # sockaddr_un.sun_path on Linux (104 on macOS, checked by bind itself)
_temporary_names = itertools.count()


class ProxySocketError(Exception):
    """The socket cannot be made (in use by a live server, or its path is taken)."""


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def bind_private_socket(path: Path) -> socket.socket:
    """A listening unix socket at ``path``, mode 0600, in a directory made 0700 if missing.
    Raises ProxySocketError when another server answers there or the path is not a socket."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise ProxySocketError(f"{path} exists and is not a socket; not replacing it")
        if _answers(path):
            raise ProxySocketError(f"another process already serves {path}")
    # Bound under a temporary name, made 0600, then renamed over the path: the socket is never
    # visible with a wider mode, and a stale one is replaced atomically.
    temporary = path.with_name(f".px{os.getpid()}-{next(_temporary_names)}")
    if len(os.fsencode(temporary)) >= _SUN_PATH_MAX or len(os.fsencode(path)) >= _SUN_PATH_MAX:
        raise ProxySocketError(f"socket path too long for a unix socket ({_SUN_PATH_MAX - 1} "
                               f"bytes at most): {path}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(temporary))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
        listener.listen(128)
    except OSError:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return listener


class ApiProxy:
    """``ApiProxy(path, opener, resolver).start()`` ... ``close()`` (or a ``with`` block)."""

    def __init__(self, socket_path: str | os.PathLike[str], opener: Opener,
                 resolver: BindResolver | None = None) -> None:
        self.socket_path = Path(socket_path)
        self.opener = opener
        self.resolver = resolver
        self._rewrite = functools.partial(rewrite_create_body, resolver=resolver,
                                          own_sockets=(str(self.socket_path),))
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._wake_r, self._wake_w = -1, -1
        self._lock = threading.Lock()
        self._connections: dict[Connection, threading.Thread] = {}
        self._closing = threading.Event()
        self._accept_thread: threading.Thread | None = None

    def bind(self) -> None:
        """Makes the socket (idempotent); :meth:`serve_forever` or :meth:`start` serve it."""
        if self._listener is None:
            self._listener = bind_private_socket(self.socket_path)
            self._inode = self.socket_path.stat().st_ino
            self._wake_r, self._wake_w = os.pipe()

    def start(self) -> ApiProxy:
        """Binds and serves in a background thread; returns self."""
        self.bind()
        self._accept_thread = threading.Thread(target=self.serve_forever, daemon=True,
                                               name="pydesk-proxy-accept")
        self._accept_thread.start()
        return self

    def serve_forever(self) -> None:
        """Accepts until :meth:`close` (from another thread)."""
        import select

        self.bind()
        assert self._listener is not None
        while not self._closing.is_set():
            ready, _, _ = select.select([self._listener.fileno(), self._wake_r], [], [])
            if self._closing.is_set() or self._wake_r in ready:
                return
            try:
                client, _ = self._listener.accept()
            except OSError as exc:
                if self._closing.is_set():
                    return
                log.warning("accept on %s failed: %s", self.socket_path, exc)
                continue
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        connection = Connection(client, self.opener, self._rewrite)
        thread = threading.Thread(target=self._run, args=(connection,), daemon=True,
                                  name="pydesk-proxy-connection")
        with self._lock:
            if self._closing.is_set():
                client.close()
                return
            self._connections[connection] = thread
        thread.start()

    def _run(self, connection: Connection) -> None:
        try:
            connection.run()
        except Exception:  # one connection's bug must not take the listener down
            log.exception("proxy connection failed")
        finally:
            with self._lock:
                self._connections.pop(connection, None)

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def close(self, timeout: float = 5.0) -> None:
        """Stops accepting, ends every live connection, removes the socket (if still ours)."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            live = dict(self._connections)
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                if self.socket_path.stat().st_ino == self._inode:
                    self.socket_path.unlink()
        for connection in live:
            connection.abort()
        deadline = time.monotonic() + timeout
        for thread in live.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> ApiProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
