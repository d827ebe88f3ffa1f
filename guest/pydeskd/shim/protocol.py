"""The shim's control protocol: the one place that defines what travels on its unix socket.

Transport
    A unix stream socket, ``<state dir>/shim.sock`` (mode 0600), one request per connection.
    The client sends one JSON object and a newline; the shim answers with one JSON object and a
    newline, ``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": {"kind": K,
    "message": M}}`` where K is an :class:`ErrorKind` (the daemon maps it to an HTTP status).
    A connection per request lets any number of ``wait`` calls block side by side.

Methods (``"method"`` in the request; ``exec_id`` null or absent means the container's init)
    state   {exec_id}                   -> ProcessState
    start   {exec_id}                   -> ProcessState (init: ``runtime start``;
                                           exec: ``runtime exec --detach``; an exec the runtime
                                           refuses fails, and ends stopped with code 126)
    wait    {exec_id}                   -> ProcessState once the process has exited (and its output
                                           is drained to the log); any number of waiters
    kill    {exec_id, signal, all}      -> {} (init: ``runtime kill``; exec: kill(2) of its pid)
    resize  {exec_id, width, height}    -> {} (TIOCSWINSZ on the pty master; tty processes only)
    attach  {exec_id, stdin}            -> {"tty": bool}, then the connection carries the stream:
                                           shim -> client: the process's output from now on;
                                           without a tty in Docker's multiplexed framing (8-byte
                                           header: stream id 1 stdout / 2 stderr, three zero
                                           bytes, big-endian uint32 length), with a tty raw bytes.
                                           The shim closes the connection when the output ends.
                                           client -> shim: bytes for the process's stdin (if
                                           ``stdin`` is true and the process has one, else read
                                           and dropped); when the client half-closes (SHUT_WR)
                                           the process's stdin pipe is closed, as Docker does for
                                           stdin-once (a tty has no separate stdin to close).
                                           A client that cannot keep up is dropped, never waited
                                           for.
    exec    {exec_id, process, tty, stdin} -> ProcessState (status created; ``process`` is an OCI
                                           process object; attach, then start it)
    delete  {exec_id}                   -> ProcessState (init: once stopped, or still created
                                           (the runtime kills it), ``runtime delete``; the state
                                           dir is removed, then the reply, then the shim exits;
                                           exec: forgets an exited exec)
    events  {}                          -> {"events": [Event...]} (what happened so far, in order)

Event order
    For the init: ``create`` (runtime create returned, the init waits for start), ``start``,
    ``exit`` (recorded on disk first), ``delete``. An exec adds ``exec_added``, ``exec_started``,
    ``exec_exited``. A process's status only moves forward along :class:`Status`; a request that
    would move it backwards or skip a step fails with ``conflict``.

This module is pure (no I/O): encoding, decoding and validation only, so it is unit-tested alone
and shared by the shim (server) and :mod:`pydeskd.shim.client`. It must never import the server.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, dataclass, field, fields
from enum import IntEnum, StrEnum
from typing import Any

MAX_MESSAGE = 1 << 20  # one request or reply line; exec process specs are small
_EXEC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Method(StrEnum):
    STATE = "state"
    START = "start"
    WAIT = "wait"
    KILL = "kill"
    RESIZE = "resize"
    ATTACH = "attach"
    EXEC = "exec"
    DELETE = "delete"
    EVENTS = "events"


class Status(StrEnum):
    """A process's life, in order. Only forward moves are legal."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"


class ErrorKind(StrEnum):
    """Why a request failed; mirrors containerd's errdefs (NotFound, Conflict, ...)."""

    NOT_FOUND = "not_found"      # no such exec id
    CONFLICT = "conflict"        # illegal in the current state (start twice, delete running)
    INVALID = "invalid"          # malformed request
    FAILED = "failed"            # the runtime or the kernel refused


class EventType(StrEnum):
    CREATE = "create"
    START = "start"
    EXIT = "exit"
    DELETE = "delete"
    EXEC_ADDED = "exec_added"
    EXEC_STARTED = "exec_started"
    EXEC_EXITED = "exec_exited"


class Stream(IntEnum):
    """Stream ids of Docker's multiplexed attach framing."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2


class ProtocolError(Exception):
    """A message that does not follow this protocol."""


class ShimError(Exception):
    """An error reply from the shim, or one to send back."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --- requests ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """Base of every request; ``exec_id`` None addresses the container's init."""

    exec_id: str | None = None

    method: Method = field(default=Method.STATE, init=False, repr=False)


@dataclass(frozen=True)
class StateRequest(Request):
    method: Method = field(default=Method.STATE, init=False, repr=False)


@dataclass(frozen=True)
class StartRequest(Request):
    method: Method = field(default=Method.START, init=False, repr=False)


@dataclass(frozen=True)
class WaitRequest(Request):
    method: Method = field(default=Method.WAIT, init=False, repr=False)


@dataclass(frozen=True)
class KillRequest(Request):
    signal: int = 15
    all: bool = False
    method: Method = field(default=Method.KILL, init=False, repr=False)


@dataclass(frozen=True)
class ResizeRequest(Request):
    width: int = 80
    height: int = 24
    method: Method = field(default=Method.RESIZE, init=False, repr=False)


@dataclass(frozen=True)
class AttachRequest(Request):
    stdin: bool = False
    method: Method = field(default=Method.ATTACH, init=False, repr=False)


@dataclass(frozen=True)
class ExecRequest(Request):
    process: dict[str, Any] = field(default_factory=dict)
    tty: bool = False
    stdin: bool = False
    method: Method = field(default=Method.EXEC, init=False, repr=False)


@dataclass(frozen=True)
class DeleteRequest(Request):
    method: Method = field(default=Method.DELETE, init=False, repr=False)


@dataclass(frozen=True)
class EventsRequest(Request):
    method: Method = field(default=Method.EVENTS, init=False, repr=False)


REQUEST_TYPES: dict[Method, type[Request]] = {
    Method.STATE: StateRequest, Method.START: StartRequest, Method.WAIT: WaitRequest,
    Method.KILL: KillRequest, Method.RESIZE: ResizeRequest, Method.ATTACH: AttachRequest,
    Method.EXEC: ExecRequest, Method.DELETE: DeleteRequest, Method.EVENTS: EventsRequest,
}

# The JSON type each request field must have (bool is checked before int: bool is an int).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "exec_id": (str, type(None)), "signal": (int,), "all": (bool,), "width": (int,),
    "height": (int,), "stdin": (bool,), "process": (dict,), "tty": (bool,),
}


def encode_request(request: Request) -> bytes:
    body = {k: v for k, v in asdict(request).items() if k != "method"}
    return _line({"method": str(request.method), **body})


def decode_request(line: bytes) -> Request:
    """Parses and validates one request line. Raises ProtocolError."""
    obj = _parse(line)
    try:
        method = Method(obj.pop("method", None))
    except ValueError:
        raise ProtocolError(f"unknown method {obj.get('method')!r}") from None
    cls = REQUEST_TYPES[method]
    allowed = {f.name for f in fields(cls) if f.init}
    unknown = set(obj) - allowed
    if unknown:
        raise ProtocolError(f"{method}: unknown field(s) {sorted(unknown)}")
    for name, value in obj.items():
        want = _FIELD_TYPES[name]
        if isinstance(value, bool) and bool not in want:
            raise ProtocolError(f"{method}: {name} must be {want[0].__name__}")
        if not isinstance(value, want):
            raise ProtocolError(f"{method}: {name} must be {want[0].__name__}")
    exec_id = obj.get("exec_id")
    if exec_id is not None and not _EXEC_ID.match(exec_id):
        raise ProtocolError(f"invalid exec id {exec_id!r}")
    if method is Method.RESIZE and not (0 < obj.get("width", 80) < 65536
                                        and 0 < obj.get("height", 24) < 65536):
        raise ProtocolError("resize: width and height must be 1..65535")
    if method is Method.KILL and not 0 < obj.get("signal", 15) < 65:
        raise ProtocolError("kill: signal must be 1..64")
    if method is Method.EXEC and exec_id is None:
        raise ProtocolError("exec: exec_id is required")
    return cls(**obj)


# --- replies ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcessState:
    """What the shim knows about one process (the init when ``exec_id`` is None)."""

    id: str
    exec_id: str | None
    status: Status
    pid: int
    tty: bool = False
    exit_code: int | None = None
    exited_at: str | None = None  # RFC 3339 with nanoseconds, UTC

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> ProcessState:
        try:
            return cls(id=str(obj["id"]), exec_id=obj.get("exec_id"), status=Status(obj["status"]),
                       pid=int(obj["pid"]), tty=bool(obj.get("tty", False)),
                       exit_code=obj.get("exit_code"), exited_at=obj.get("exited_at"))
        except (KeyError, ValueError, TypeError) as e:
            raise ProtocolError(f"bad process state {obj!r}: {e}") from None


@dataclass(frozen=True)
class Event:
    type: EventType
    time: str
    exec_id: str | None = None
    exit_code: int | None = None

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Event:
        try:
            return cls(type=EventType(obj["type"]), time=str(obj["time"]),
                       exec_id=obj.get("exec_id"), exit_code=obj.get("exit_code"))
        except (KeyError, ValueError) as e:
            raise ProtocolError(f"bad event {obj!r}: {e}") from None


def encode_ok(result: dict[str, Any] | None = None) -> bytes:
    return _line({"ok": True, "result": result or {}})


def encode_error(kind: ErrorKind, message: str) -> bytes:
    return _line({"ok": False, "error": {"kind": str(kind), "message": message}})


def decode_reply(line: bytes) -> dict[str, Any]:
    """The result of a reply line; raises ShimError for an error reply, ProtocolError if bad."""
    obj = _parse(line)
    if obj.get("ok") is True and isinstance(obj.get("result"), dict):
        result: dict[str, Any] = obj["result"]
        return result
    err = obj.get("error")
    if obj.get("ok") is False and isinstance(err, dict):
        try:
            kind = ErrorKind(str(err.get("kind")))
        except ValueError:
            kind = ErrorKind.FAILED
        raise ShimError(kind, str(err.get("message", "")))
    raise ProtocolError(f"bad reply {line[:200]!r}")


# --- attach framing ---------------------------------------------------------------------------

_HEADER = struct.Struct(">BxxxI")
HEADER_SIZE = _HEADER.size


def frame(stream: Stream, data: bytes) -> bytes:
    """One frame of Docker's multiplexed stream: header (id, 0, 0, 0, BE length) + payload."""
    return _HEADER.pack(stream, len(data)) + data


class FrameDecoder:
    """Incremental decoder of the multiplexed stream: feed bytes, get (stream, payload) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Stream, bytes]]:
        self._buf += data
        out: list[tuple[Stream, bytes]] = []
        while len(self._buf) >= HEADER_SIZE:
            sid, size = _HEADER.unpack_from(self._buf)
            if sid not in (0, 1, 2):
                raise ProtocolError(f"bad stream id {sid} in attach frame")
            if len(self._buf) < HEADER_SIZE + size:
                break
            out.append((Stream(sid), bytes(self._buf[HEADER_SIZE:HEADER_SIZE + size])))
            del self._buf[:HEADER_SIZE + size]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered (non-zero at EOF means truncation)."""
        return len(self._buf)


# --- helpers ----------------------------------------------------------------------------------

def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _parse(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_MESSAGE:
        raise ProtocolError("message too long")
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message is not a JSON object")
    return obj
