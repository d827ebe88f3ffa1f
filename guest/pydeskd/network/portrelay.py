"""The port proxy's relays: bytes between a published port's clients and the container.

Runs in the pydesk-proxy process (see :mod:`pydeskd.network.portproxy`), which starts as
``python -I -S`` for every published port: this module imports only C modules (``_socket``,
``_thread``, ``os``, ``fcntl``, ``select``, ``errno``, ``time``), never ``socket``,
``threading`` or ``typing``.

TCP: one epoll loop per port (:class:`_TcpRelay`), splicing each direction socket -> pipe ->
socket (the bytes never enter Python; as fast as a 1 MiB read/write loop here, with no copy to
user space), and passing a half-close on (shutdown SHUT_WR at EOF). UDP: one socket per client
(so answers find their way back), dropped after an idle timeout, a thread each. Neither must
ever let one connection's error stop the listener: running out of fds (EMFILE, ENFILE: a
TCP connection costs six, two sockets and two pipes) refuses that one connection, and the
number of connections is capped below the fd limit, which :func:`raise_fd_limit` lifts to
the hard limit at start.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

SPLICE_CHUNK = 1 << 20
PIPE_SIZE = 1 << 20              # F_SETPIPE_SZ; the kernel caps it at fs.pipe-max-size
UDP_IDLE_TIMEOUT = 90.0          # docker-proxy's UDPConnTrackTimeout
UDP_MAX_CLIENTS = 1024
UDP_BUFFER = 65535
CONNECT_TIMEOUT = 30.0
THREAD_STACK = 256 * 1024        # UDP answer threads need little: many clients, little memory
FDS_PER_CONNECTION = 6           # client, upstream, two pipes of two ends each
FD_RESERVE = 16                  # std streams, the listener, epoll, the interpreter's own


def raise_fd_limit() -> int:
    """Lifts the soft RLIMIT_NOFILE to the hard limit (as Go's runtime does for docker-proxy);
    returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def max_connections(fd_limit: int) -> int:
    """How many TCP connections fit in ``fd_limit`` fds (at least one)."""
    return max(1, (fd_limit - FD_RESERVE) // FDS_PER_CONNECTION)


def _family(address: str) -> int:
    import _socket

    return _socket.AF_INET6 if ":" in address else _socket.AF_INET


class _Direction:
    """One direction of a proxied connection: source socket -> pipe -> sink socket, without
    blocking. The pipe holds what the sink could not take yet."""

    __slots__ = ("eof", "pending", "pipe_r", "pipe_w", "sink", "source", "write_blocked")

    def __init__(self, source: int, sink: int) -> None:
        self.source = source
        self.sink = sink
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            import fcntl

            fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # over the user's pipe quota: the default 64 KiB still works
            pass
        self.pending = 0              # bytes in the pipe
        self.eof = False              # the source sent EOF
        self.write_blocked = False    # the sink is full: wait until it is writable

    def finished(self) -> bool:
        """EOF read and everything before it written."""
        return self.eof and not self.pending

    def pump(self) -> None:
        """Moves what can move now. Raises OSError (reset, broken pipe)."""
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        while True:
            while self.pending:
                try:
                    self.pending -= os.splice(self.pipe_r, self.sink, self.pending, flags=flags)
                except BlockingIOError:
                    self.write_blocked = True
                    return
            self.write_blocked = False
            if self.eof:
                return
            try:
                moved = os.splice(self.source, self.pipe_w, SPLICE_CHUNK, flags=flags)
            except BlockingIOError:
                return
            if moved == 0:
                self.eof = True
                return
            self.pending += moved

    def close(self) -> None:
        os.close(self.pipe_r)
        os.close(self.pipe_w)


class _Connection:
    """A client, its connection to the container (connecting, then relayed both ways)."""

    __slots__ = ("client", "connected", "deadline", "down", "masks", "up", "upstream")

    def __init__(self, client: _socket.socket, upstream: _socket.socket, deadline: float) -> None:
        self.client = client
        self.upstream = upstream
        self.deadline = deadline                # for the connect
        self.connected = False
        self.up: _Direction | None = None       # client -> container
        self.down: _Direction | None = None     # container -> client
        self.masks: dict[int, int] = {}         # fd -> the events epoll waits for


class _TcpRelay:
    """Every connection of one published TCP port, on one thread: accept, a non-blocking
    connect to the container, then both directions spliced when epoll says they can move.

    One thread rather than a thread pair per connection: measured against docker-proxy on
    127.0.0.1, the pair set up ~1000 connections/s to docker-proxy's ~1300-1500 (two thread
    starts and their GIL hand-offs per connection, and a long tail on a loaded host), this
    loop ~1500-1800, at the same stream throughput."""

    def __init__(self, listener: _socket.socket, target: tuple[str, int],
                 limit: int) -> None:
        import select

        self.listener = listener
        self.target = target
        self.limit = limit                      # connections at once; more are refused
        self.poller = select.epoll()
        self.connections: dict[int, _Connection] = {}
        self.closed: set[int] = set()           # fds closed during this round of events

    def serve(self) -> None:
        import select
        import time

        self.listener.setblocking(False)
        listen_fd = self.listener.fileno()
        self.poller.register(listen_fd, select.EPOLLIN)
        next_check = time.monotonic() + 1.0
        while True:
            events = self.poller.poll(1.0)
            self.closed.clear()
            for fd, mask in events:
                if fd == listen_fd:
                    self.accept()
                elif fd not in self.closed and (conn := self.connections.get(fd)) is not None:
                    self.ready(conn, fd, mask)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                self.expire_connects()

    def accept(self) -> None:
        import _socket
        import errno

        for _ in range(64):  # a burst, then the established connections get their turn
            try:
                fd, _ = self.listener._accept()  # type: ignore[attr-defined]  # no socket.socket
            except BlockingIOError:
                return
            except OSError as e:  # EMFILE, ECONNABORTED...: keep serving the others
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    import time

                    time.sleep(0.01)
                return
            client = _socket.socket(self.listener.family, _socket.SOCK_STREAM, 0, fd)
            if len(self.connections) // 2 >= self.limit:
                client.close()  # refused: the others keep their fds
                continue
            try:
                upstream = _socket.socket(_family(self.target[0]), _socket.SOCK_STREAM)
            except OSError:  # EMFILE, ENFILE, ENOBUFS: refuse this one, keep serving
                client.close()
                continue
            client.setblocking(False)
            upstream.setblocking(False)
            if upstream.connect_ex(self.target) not in (0, errno.EINPROGRESS):
                client.close()
                upstream.close()
                continue
            import time

            conn = _Connection(client, upstream, time.monotonic() + CONNECT_TIMEOUT)
            self.connections[client.fileno()] = self.connections[upstream.fileno()] = conn
            self.watch(conn, upstream.fileno(), _EPOLLOUT)

    def ready(self, conn: _Connection, fd: int, mask: int) -> None:
        import _socket

        if mask & _EPOLLERR and conn.connected:
            self.close(conn)  # a reset: nothing more can move either way
            return
        if not conn.connected:
            if conn.upstream.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR):
                self.close(conn)  # refused or unreachable: the client is closed, as Docker
                return
            conn.connected = True
            for sock in (conn.client, conn.upstream):
                # Go (docker-proxy) sets TCP_NODELAY on every connection: small requests and
                # answers must not wait for Nagle here either.
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            try:
                conn.up = _Direction(conn.client.fileno(), conn.upstream.fileno())
                conn.down = _Direction(conn.upstream.fileno(), conn.client.fileno())
            except OSError:  # no fds for the pipes: this connection goes, the others stay
                self.close(conn)
                return
        self.pump(conn)

    def pump(self, conn: _Connection) -> None:
        import _socket

        up, down = conn.up, conn.down
        assert up is not None and down is not None
        try:
            for direction, sink in ((up, conn.upstream), (down, conn.client)):
                if direction.finished():
                    continue
                direction.pump()
                if direction.finished():
                    sink.shutdown(_socket.SHUT_WR)  # EOF passed on: the other side may answer
        except OSError:
            self.close(conn)
            return
        if up.finished() and down.finished():
            self.close(conn)
            return
        # Read from a socket while its direction's pipe is empty; wait for a sink to drain
        # when it was full. A socket with nothing left to do either way is left out (epoll
        # would report its hang-up over and over).
        client = (0 if up.finished() or up.pending else _EPOLLIN) | \
            (_EPOLLOUT if down.write_blocked else 0)
        upstream = (0 if down.finished() or down.pending else _EPOLLIN) | \
            (_EPOLLOUT if up.write_blocked else 0)
        self.watch(conn, conn.client.fileno(), client if not (up.eof and down.finished()) else 0)
        self.watch(conn, conn.upstream.fileno(),
                   upstream if not (down.eof and up.finished()) else 0)

    def watch(self, conn: _Connection, fd: int, mask: int) -> None:
        """Waits for ``mask`` on ``fd`` (0: not at all: unregistered)."""
        old = conn.masks.get(fd)
        if old == mask:
            return
        if not mask:
            if old is not None:
                self.poller.unregister(fd)
                del conn.masks[fd]
            return
        if old is None:
            self.poller.register(fd, mask)
        else:
            self.poller.modify(fd, mask)
        conn.masks[fd] = mask

    def close(self, conn: _Connection) -> None:
        for fd in conn.masks:
            try:  # noqa: SIM105 (contextlib is ~2 ms of start-up)
                self.poller.unregister(fd)
            except OSError:
                pass
        conn.masks.clear()
        for sock in (conn.client, conn.upstream):
            fd = sock.fileno()
            self.connections.pop(fd, None)
            self.closed.add(fd)
            sock.close()
        for direction in (conn.up, conn.down):
            if direction is not None:
                direction.close()

    def expire_connects(self) -> None:
        import time

        now = time.monotonic()
        late = {id(c): c for c in self.connections.values()
                if not c.connected and now > c.deadline}
        for conn in late.values():
            self.close(conn)


_EPOLLIN, _EPOLLOUT, _EPOLLERR = 0x001, 0x004, 0x008   # select.EPOLL*, constant on Linux


def serve_tcp(listener: _socket.socket, target: tuple[str, int],
              limit: int | None = None) -> None:
    """Relays every connection to ``listener`` to ``target``, forever, at most ``limit`` at
    once (default: what the fd limit, raised to the hard limit, holds)."""
    if limit is None:
        limit = max_connections(raise_fd_limit())
    _TcpRelay(listener, target, limit).serve()


class _UdpClient:
    __slots__ = ("last", "upstream")

    def __init__(self, upstream: _socket.socket, last: float) -> None:
        self.upstream = upstream
        self.last = last            # monotonic time of the last datagram either way


def serve_udp(listener: _socket.socket, target: tuple[str, int], idle_timeout: float) -> None:
    """Datagrams from each client go out of a socket of its own (so answers find their way
    back), which is closed after ``idle_timeout`` without traffic either way."""
    import _socket
    import _thread
    import time

    _thread.stack_size(THREAD_STACK)
    clients: dict[tuple[str, int], _UdpClient] = {}
    lock = _thread.allocate_lock()

    def answer(client: _UdpClient, peer: tuple[str, int]) -> None:
        try:
            while True:
                try:
                    data = client.upstream.recv(UDP_BUFFER)
                except TimeoutError:
                    if time.monotonic() - client.last >= idle_timeout:
                        return
                    continue
                except ConnectionRefusedError:  # ICMP from the container: keep the client
                    continue
                except OSError:
                    return
                client.last = time.monotonic()
                try:  # noqa: SIM105 (no contextlib, see above)
                    listener.sendto(data, peer)
                except OSError:
                    pass
        finally:
            with lock:
                del clients[peer]
            client.upstream.close()

    while True:
        try:
            data, peer = listener.recvfrom(UDP_BUFFER)
        except OSError:
            continue
        with lock:
            client = clients.get(peer)
            if client is None:
                if len(clients) >= UDP_MAX_CLIENTS:
                    continue
                try:
                    upstream = _socket.socket(_family(target[0]), _socket.SOCK_DGRAM)
                except OSError:  # EMFILE...: this client's datagram is dropped
                    continue
                try:
                    upstream.connect(target)
                except OSError:
                    upstream.close()
                    continue
                # Wakes up to check idleness: the socket is dropped within a slice of the limit.
                upstream.settimeout(max(0.05, min(idle_timeout / 4, 5.0)))
                client = clients[peer] = _UdpClient(upstream, time.monotonic())
                try:
                    _thread.start_new_thread(answer, (client, peer))
                except RuntimeError:  # no thread to be had: drop the client, not the port
                    del clients[peer]
                    upstream.close()
                    continue
            else:
                client.last = time.monotonic()
        try:  # noqa: SIM105 (no contextlib, see above)
            client.upstream.send(data)
        except OSError:
            pass
