"""The port proxy's relays: bytes between a published port's clients and the container.

Runs in the pydesk-proxy process (see :mod:`pydeskd.network.portproxy`), which starts as
``python -I -S`` for every published port: this module imports only C modules (``_socket``,
``_thread``, ``os``, ``fcntl``, ``time``), never ``socket``, ``threading`` or ``typing``.

TCP: a thread pair per connection, each splicing one direction socket -> pipe -> socket (the
bytes never enter Python; as fast as a 1 MiB read/write loop here, with no copy to user
space), and passing a half-close on (shutdown SHUT_WR at EOF). UDP: one socket per client (so
answers find their way back), dropped after an idle timeout. Neither must ever let one
connection's error stop the listener.
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
THREAD_STACK = 256 * 1024        # relay threads need little: many connections, little memory


def _family(address: str) -> int:
    import _socket

    return _socket.AF_INET6 if ":" in address else _socket.AF_INET


def serve_tcp(listener: _socket.socket, target: tuple[str, int]) -> None:
    import _thread

    _thread.stack_size(THREAD_STACK)
    while True:
        try:
            fd, _ = listener._accept()  # type: ignore[attr-defined]  # no socket.socket
        except InterruptedError:
            continue
        except OSError:  # EMFILE, ECONNABORTED...: keep serving the others
            import time

            time.sleep(0.01)
            continue
        _thread.start_new_thread(_connect_and_relay, (fd, listener.family, target))


def _connect_and_relay(client_fd: int, family: int, target: tuple[str, int]) -> None:
    import _socket
    import _thread

    client = _socket.socket(family, _socket.SOCK_STREAM, 0, client_fd)
    upstream = _socket.socket(_family(target[0]), _socket.SOCK_STREAM)
    try:
        upstream.settimeout(CONNECT_TIMEOUT)
        upstream.connect(target)
        upstream.settimeout(None)
        for sock in (client, upstream):
            # Go (docker-proxy) sets TCP_NODELAY on every connection: small requests and
            # answers must not wait for Nagle here either.
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    except OSError:
        client.close()
        upstream.close()
        return
    pair = _Pair(client, upstream)
    _thread.start_new_thread(pair.relay, (upstream, client))
    pair.relay(client, upstream)


class _Pair:
    """One proxied connection: two directions, closed when both are done."""

    def __init__(self, client: _socket.socket, upstream: _socket.socket) -> None:
        import _thread

        self.sockets = (client, upstream)
        self.lock = _thread.allocate_lock()
        self.running = 2

    def relay(self, source: _socket.socket, sink: _socket.socket) -> None:
        import _socket

        try:
            _splice_all(source.fileno(), sink.fileno())
            sink.shutdown(_socket.SHUT_WR)  # EOF: the other side may still answer
        except OSError:
            # A reset or a broken pipe ends the other direction too (its blocking splice
            # returns once the sockets are shut down).
            for sock in self.sockets:
                try:  # noqa: SIM105 (contextlib is ~2 ms of start-up)
                    sock.shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass
        with self.lock:
            self.running -= 1
            last = self.running == 0
        if last:
            for sock in self.sockets:
                sock.close()


def _splice_all(source: int, sink: int) -> None:
    """Moves bytes from ``source`` to ``sink`` through a pipe until EOF: socket -> pipe ->
    socket, page references only, never a copy in Python. Raises OSError."""
    read_end, write_end = os.pipe()
    try:
        try:
            import fcntl

            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # over the user's pipe quota: the default 64 KiB still works
            pass
        while True:
            moved = os.splice(source, write_end, SPLICE_CHUNK, flags=os.SPLICE_F_MOVE)
            if moved == 0:
                return
            while moved:
                moved -= os.splice(read_end, sink, moved, flags=os.SPLICE_F_MOVE)
    finally:
        os.close(read_end)
        os.close(write_end)


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
                upstream = _socket.socket(_family(target[0]), _socket.SOCK_DGRAM)
                try:
                    upstream.connect(target)
                except OSError:
                    upstream.close()
                    continue
                # Wakes up to check idleness: the socket is dropped within a slice of the limit.
                upstream.settimeout(max(0.05, min(idle_timeout / 4, 5.0)))
                client = clients[peer] = _UdpClient(upstream, time.monotonic())
                _thread.start_new_thread(answer, (client, peer))
            else:
                client.last = time.monotonic()
        try:  # noqa: SIM105 (no contextlib, see above)
            client.upstream.send(data)
        except OSError:
            pass
