"""The SSH channel to the guest (paramiko): commands, and a stream to the guest daemon's socket.

What it is for: :class:`GuestChannel` logs in with the instance's client key, checks that the guest
shows exactly the pinned host key, runs commands (:meth:`exec`), opens interactive shells, and
opens ``direct-streamlocal@openssh.com`` channels to ``GUEST_API_SOCKET`` (:meth:`open_unix`):
the only way the host reaches the guest's Engine API.
What it must never do: accept an unknown host key (no auto-add, no known_hosts of the user), use
an agent or the user's own keys, or expose the guest API on a TCP port.

paramiko has no helper for streamlocal forwarding (OpenSSH's PROTOCOL, 2.4: channel type
``direct-streamlocal@openssh.com`` with string socket path, string reserved, uint32 reserved), so
:func:`open_streamlocal` sends that CHANNEL_OPEN itself, with the same bookkeeping as
``Transport.open_channel``.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko  # type: ignore[import-untyped]
from paramiko.common import cMSG_CHANNEL_OPEN  # type: ignore[import-untyped]
from paramiko.message import Message  # type: ignore[import-untyped]

from pydesk.vm.errors import ChannelError, HostKeyMismatch
from pydeskd.vmcontract import GUEST_API_SOCKET, GUEST_USER, HOST_FORWARD_ADDRESS

STREAMLOCAL = "direct-streamlocal@openssh.com"

# paramiko's transport thread logs every failed handshake with a traceback; with no handler
# configured, Python's last-resort handler would print those on the user's terminal. Our
# callers get a ChannelError with the reason instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class ExecResult:
    status: int
    stdout: bytes
    stderr: bytes


def pinned_key(public_line: str) -> tuple[str, bytes]:
    """``ssh-ed25519 AAAA... comment`` -> (key type, key blob)."""
    parts = public_line.split()
    if len(parts) < 2:
        raise ChannelError(f"malformed pinned host key: {public_line[:40]!r}")
    return parts[0], base64.b64decode(parts[1])


def load_private_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(str(path))
    except (OSError, paramiko.SSHException) as e:
        raise ChannelError(f"cannot read the client key {path}: {e}") from e


def open_streamlocal(transport: paramiko.Transport, socket_path: str,
                     timeout: float = 10.0) -> paramiko.Channel:
    """Opens a channel to ``socket_path`` on the server (OpenSSH streamlocal forwarding)."""
    if not transport.is_active():
        raise ChannelError("SSH session not active")
    # Same steps as paramiko's Transport.open_channel, which only knows the tcpip and x11 forms.
    t: Any = transport
    with t.lock:
        window_size = t._sanitize_window_size(None)
        max_packet_size = t._sanitize_packet_size(None)
        chanid = t._next_channel()
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string(STREAMLOCAL)
        m.add_int(chanid)
        m.add_int(window_size)
        m.add_int(max_packet_size)
        m.add_string(socket_path)
        m.add_string("")  # reserved
        m.add_int(0)  # reserved
        chan = paramiko.Channel(chanid)
        t._channels.put(chanid, chan)
        event = t.channel_events[chanid] = threading.Event()
        t.channels_seen[chanid] = True
        chan._set_transport(transport)
        chan._set_window(window_size, max_packet_size)
    t._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not event.wait(0.1):
        if not transport.is_active():
            raise ChannelError(f"SSH session closed while opening {socket_path}")
        if time.monotonic() > deadline:
            raise ChannelError(f"timed out opening a channel to {socket_path}")
    opened = t._channels.get(chanid)
    if opened is None:
        # The server refused (open-failure): sshd says why only in its own log.
        raise ChannelError(f"the guest refused a channel to {socket_path} (is the daemon up, "
                           "and AllowStreamLocalForwarding on?)")
    return opened


class GuestChannel:
    """One authenticated SSH connection to the guest; thread-safe for opening channels."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self.transport = transport

    @classmethod
    def connect(cls, port: int, client_key: Path, host_public_line: str, *,
                host: str = HOST_FORWARD_ADDRESS, user: str = GUEST_USER,
                timeout: float = 10.0) -> GuestChannel:
        """Connects and authenticates; raises HostKeyMismatch or ChannelError."""
        key_type, key_blob = pinned_key(host_public_line)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise ChannelError(f"cannot connect to the guest's sshd at {host}:{port}: "
                               f"{e.strerror or e}") from e
        # Small request/response exchanges (every API call, every exec) must not wait for
        # Nagle's delayed ACK: measured 151 -> 90 ms per `docker exec` through the proxy.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        transport.auth_timeout = timeout
        # Offer only the pinned key's type, so the server presents that key and no other.
        transport.get_security_options().key_types = [key_type]
        try:
            transport.start_client(timeout=timeout)
            shown = transport.get_remote_server_key()
            if shown.get_name() != key_type or shown.asbytes() != key_blob:
                raise HostKeyMismatch(
                    f"the guest presented host key {shown.get_name()} "
                    f"{shown.get_base64()[:24]}..., not the pinned one",
                    hint="something else answers on the forwarded port; pydesk vm rm --force "
                         "and start again if the instance was rebuilt")
            transport.auth_publickey(user, load_private_key(client_key))
        except HostKeyMismatch:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:
            transport.close()
            raise ChannelError(f"SSH to the guest failed: {e or type(e).__name__}") from e
        if not transport.is_authenticated():
            transport.close()
            raise ChannelError("the guest did not accept the client key")
        transport.set_keepalive(15)
        return cls(transport)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> GuestChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def active(self) -> bool:
        return bool(self.transport.is_active())

    def exec(self, command: str, *, timeout: float = 60.0,
             stdin: bytes = b"") -> ExecResult:
        """Runs ``command`` in the guest; returns its exit status and output."""
        try:
            chan = self.transport.open_session(timeout=timeout)
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            # Until the guest's EOF, not its exit status: sshd may send the status while output
            # still waits behind the channel's window (a large `cat` came back cut short).
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.eof_received or chan.closed:
                    break
                else:
                    time.sleep(0.005)
            status = chan.recv_exit_status()
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            chan.close()
        except (paramiko.SSHException, OSError) as e:
            raise ChannelError(f"running {command!r} in the guest failed: {e}") from e
        return ExecResult(status, bytes(out), bytes(err))

    def open_unix(self, socket_path: str = GUEST_API_SOCKET,
                  timeout: float = 10.0) -> paramiko.Channel:
        """A socket-like channel connected to ``socket_path`` in the guest."""
        return open_streamlocal(self.transport, socket_path, timeout)

    def http_get(self, path: str, *, socket_path: str = GUEST_API_SOCKET,
                 timeout: float = 10.0) -> tuple[int, bytes]:
        """One HTTP/1.1 GET over a fresh streamlocal channel: (status code, body)."""
        return self.request("GET", path, socket_path=socket_path, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, *,
                content_type: str = "application/json", socket_path: str = GUEST_API_SOCKET,
                timeout: float = 10.0) -> tuple[int, bytes]:
        """One HTTP/1.1 request over a fresh streamlocal channel, read to the end."""
        chan = self.open_unix(socket_path, timeout)
        head = f"{method} {path} HTTP/1.1\r\nHost: pydesk\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        try:
            chan.settimeout(timeout)
            chan.sendall(head.encode() + b"\r\n" + (body or b""))
            data = bytearray()
            while chunk := chan.recv(65536):
                data += chunk
        except (OSError, paramiko.SSHException) as e:
            raise ChannelError(f"{method} {path} through the channel failed: {e}") from e
        finally:
            chan.close()
        return parse_http_response(bytes(data))

    def ping(self, timeout: float = 10.0) -> bool:
        """True when the guest daemon answers /_ping with 200 OK."""
        try:
            status, body = self.http_get("/_ping", timeout=timeout)
        except ChannelError:
            return False
        return status == 200 and body.strip() == b"OK"


def parse_http_response(data: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole HTTP/1.1 response (Content-Length, chunked, or to EOF)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        raise ChannelError(f"not an HTTP response: {data[:60]!r}")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError) as e:
        raise ChannelError(f"bad HTTP status line: {lines[0]!r}") from e
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(b":") for line in lines[1:])}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        decoded = bytearray()
        rest = body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded += rest[:size]
            rest = rest[size + 2:]
        return status, bytes(decoded)
    if b"content-length" in headers:
        return status, body[:int(headers[b"content-length"])]
    return status, body
