"""The control socket's server side: connections, request dispatch, and the attach stream.

One thread accepts, one thread serves each connection (a ``wait`` blocks only its own). Every
request is decoded by :mod:`pydeskd.shim.protocol` and handed to the :class:`~pydeskd.shim.
server.Shim`; errors go back as error replies, never as a dropped connection.
This module must never change a process's state itself (the Shim does), nor block the
container on a client (attach output goes through :class:`~pydeskd.shim.stdio.Subscriber`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

from pydeskd.shim import diag
from pydeskd.shim import protocol as p
from pydeskd.shim.paths import MAX_SOCKET_PATH
from pydeskd.shim.server import Shim
from pydeskd.shim.stdio import Subscriber


def listen(path: Path) -> socket.socket:
    """The control socket, mode 0600. Raises OSError (ValueError if the path is too long)."""
    if len(str(path)) > MAX_SOCKET_PATH:
        raise ValueError(f"control socket path is too long for AF_UNIX: {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)  # before listen(): nobody can connect yet
    sock.listen(64)
    return sock


def serve(shim: Shim, listener: socket.socket) -> None:
    """Accepts connections in a thread, one thread per connection, until the shim is done."""
    def accept_loop() -> None:
        while not shim.done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_handle, args=(shim, conn), name="conn",
                             daemon=True).start()
    threading.Thread(target=accept_loop, name="accept", daemon=True).start()


def _handle(shim: Shim, conn: socket.socket) -> None:
    attached = False
    line = b""
    try:
        try:
            line = _recv_line(conn)
            req = p.decode_request(line)
            result = _dispatch(shim, req)
        except p.ProtocolError as e:
            conn.sendall(p.encode_error(p.ErrorKind.INVALID, str(e)))
            return
        except p.ShimError as e:
            conn.sendall(p.encode_error(e.kind, e.message))
            return
        except Exception as e:
            diag.exception("%r failed", line[:100])
            conn.sendall(p.encode_error(p.ErrorKind.FAILED, f"{type(e).__name__}: {e}"))
            return
        if isinstance(req, p.AttachRequest):
            attached = True
            _attach(shim, req, conn)
        elif isinstance(req, p.DeleteRequest) and req.exec_id is None:
            # The state dir goes before the reply: whoever reads it finds nothing left.
            shim.remove_state()
            try:
                conn.sendall(p.encode_ok(result))
            finally:
                shim.done.set()
        else:
            conn.sendall(p.encode_ok(result))
    except OSError as e:
        diag.debug("connection: %s", e)
    finally:
        if not attached:
            conn.close()


def _dispatch(shim: Shim, req: p.Request) -> dict[str, Any]:
    if isinstance(req, p.EventsRequest):
        return {"events": [_event_dict(e) for e in shim.events()]}
    if isinstance(req, p.ExecRequest):
        assert req.exec_id is not None  # decode_request requires it
        return _state_dict(shim.exec(req.exec_id, req.process, req.tty, req.stdin))
    if isinstance(req, p.StateRequest):
        return _state_dict(shim.state(req.exec_id))
    if isinstance(req, p.StartRequest):
        return _state_dict(shim.start(req.exec_id))
    if isinstance(req, p.WaitRequest):
        return _state_dict(shim.wait(req.exec_id))
    if isinstance(req, p.KillRequest):
        shim.kill(req.exec_id, req.signal, req.all)
        return {}
    if isinstance(req, p.ResizeRequest):
        shim.process(req.exec_id).resize(req.width, req.height)
        return {}
    if isinstance(req, p.AttachRequest):
        return {"tty": shim.process(req.exec_id).tty}
    if isinstance(req, p.DeleteRequest):
        return _state_dict(shim.delete(req.exec_id))
    raise p.ProtocolError(f"unhandled method {req.method}")  # pragma: no cover


def _attach(shim: Shim, req: p.AttachRequest, conn: socket.socket) -> None:
    """Streams output to the client and its bytes to stdin, until the output ends."""
    try:
        proc = shim.process(req.exec_id)
        sub = Subscriber(conn)
        proc.fanout.subscribe(sub)  # before the reply: no output falls between the two
        try:
            conn.sendall(p.encode_ok({"tty": proc.tty}))
            sub.start_writer()
            stdin_open = req.stdin
            while data := conn.recv(65536):
                if stdin_open and not proc.write_stdin(data):
                    stdin_open = False  # closed, or none: the rest is read and dropped
            if stdin_open and not sub.closing:  # the client half-closed: stdin-once
                proc.close_stdin()
            sub.done.wait()
        except OSError:
            sub.drop()
    except p.ShimError as e:  # the exec went away between dispatch and attach
        with contextlib.suppress(OSError):
            conn.sendall(p.encode_error(e.kind, e.message))
    finally:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()


def _recv_line(conn: socket.socket) -> bytes:
    """One request line; nothing after its newline is consumed (it may be attach input)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = conn.recv(4096, socket.MSG_PEEK)
        if not chunk:
            break
        nl = chunk.find(b"\n")
        buf += conn.recv(len(chunk) if nl < 0 else nl + 1)
        if len(buf) > p.MAX_MESSAGE:
            raise p.ProtocolError("request too long")
    return bytes(buf)


def _state_dict(state: p.ProcessState) -> dict[str, Any]:
    return {"id": state.id, "exec_id": state.exec_id, "status": str(state.status),
            "pid": state.pid, "tty": state.tty, "exit_code": state.exit_code,
            "exited_at": state.exited_at}


def _event_dict(event: p.Event) -> dict[str, Any]:
    return {"type": str(event.type), "time": event.time, "exec_id": event.exec_id,
            "exit_code": event.exit_code}
