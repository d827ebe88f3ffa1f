"""The sync protocol's framing: one message = a JSON header plus raw bytes, length-prefixed.

What it is for: both ends of a sync session (host ``pydesk.sync`` and guest ``pydeskd.syncd``)
exchange messages over one bidirectional byte stream (an SSH exec channel, or a pipe in tests).
A frame is ``>II`` (header length, data length), the UTF-8 JSON header (an object with ``t``, the
message type), then the data. The host imports this very module (a portable guest module, see
``pydeskd.vmcontract``).
What it must never do: interpret messages (that is the server's job) or read past one frame.
"""

from __future__ import annotations

import json
import struct
from typing import Any

PROTOCOL_VERSION = 2  # 2: the copy's identity in hello; durable barriers
HEAD = struct.Struct(">II")
MAX_HEADER = 64 << 20
MAX_DATA = 64 << 20


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame."""


def encode(header: dict[str, Any], data: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return HEAD.pack(len(head), len(data)) + head + data


class FrameReader:
    """Incremental decoder: ``feed`` bytes as they come, ``frames`` yields complete messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[dict[str, Any], bytes]]:
        self._buf += chunk
        out: list[tuple[dict[str, Any], bytes]] = []
        while len(self._buf) >= HEAD.size:
            hlen, dlen = HEAD.unpack_from(self._buf)
            if hlen > MAX_HEADER or dlen > MAX_DATA:
                raise ProtocolError(f"frame too large ({hlen} + {dlen} bytes)")
            end = HEAD.size + hlen + dlen
            if len(self._buf) < end:
                break
            try:
                header = json.loads(bytes(self._buf[HEAD.size:HEAD.size + hlen]))
            except ValueError as e:
                raise ProtocolError(f"bad frame header: {e}") from e
            if not isinstance(header, dict) or "t" not in header:
                raise ProtocolError("frame header is not a message object")
            out.append((header, bytes(self._buf[HEAD.size + hlen:end])))
            del self._buf[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame (non-zero at EOF means the peer died mid-message)."""
        return len(self._buf)


BATCH_BYTES = 1 << 20
BATCH_OPS = 2000


class PutBatch:
    """Packs many changes into few ``put`` messages (10,000 small files must not cost 10,000
    round trips or frames): ``add`` returns the frames that became full, ``flush`` the rest."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.extra = extra or {}
        self._ops: list[dict[str, Any]] = []
        self._data: list[bytes] = []
        self._size = 0

    def add(self, op: dict[str, Any], data: bytes = b"") -> list[bytes]:
        if data:
            op["n"] = len(data)
            self._data.append(data)
            self._size += len(data)
        self._ops.append(op)
        if self._size >= BATCH_BYTES or len(self._ops) >= BATCH_OPS:
            return self.flush()
        return []

    def flush(self) -> list[bytes]:
        if not self._ops:
            return []
        frame = encode({"t": "put", "ops": self._ops, **self.extra}, b"".join(self._data))
        self._ops, self._data, self._size = [], [], 0
        return [frame]


def split_put(header: dict[str, Any], data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """The (op, its bytes) pairs of a ``put`` message."""
    out: list[tuple[dict[str, Any], bytes]] = []
    pos = 0
    for op in header.get("ops", []):
        if not isinstance(op, dict):
            raise ProtocolError("put op is not an object")
        n = int(op.get("n", 0))
        if n < 0 or pos + n > len(data):
            raise ProtocolError("put op data out of range")
        out.append((op, data[pos:pos + n]))
        pos += n
    return out
