"""Attach and exec streams for the API routes: output framing, and detach keys.

What it is for: the routes hijack the connection; this module turns the shim's attach stream
into the bytes Docker sends: without a tty, each chunk in the 8-byte multiplexed header
(stream id 1 stdout / 2 stderr, three zero bytes, big-endian uint32 length); with a tty, raw.
:class:`DetachScanner` watches stdin for the detach sequence (default ctrl-p,ctrl-q), holding
back a partial match as Docker's escape proxy does.

Pure (bytes in, bytes out); the sockets belong to the routes and the shim client.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.shim.client import AttachStream
from pydeskd.shim.protocol import Stream

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


def frame(stream: Stream | int, data: bytes) -> bytes:
    """One chunk in Docker's multiplexed framing."""
    return struct.pack(">BxxxI", int(stream), len(data)) + data


def framed(chunks: Iterator[tuple[Stream, bytes]], tty: bool) -> Iterator[bytes]:
    """The bytes to send for an attach/exec/logs output: raw with a tty, framed without."""
    for stream, data in chunks:
        if data:
            yield data if tty else frame(stream, data)


def parse_detach_keys(spec: str | None) -> bytes:
    """``ctrl-p,ctrl-q`` -> b'\\x10\\x11' as Docker's term.ToBytes: ``a``-``z``, ``ctrl-@``,
    ``ctrl-a``..``ctrl-z``, ``ctrl-[``, ``ctrl-\\``, ``ctrl-]``, ``ctrl-^``, ``ctrl-_``, and
    single characters. "" or None is the default. Raises InvalidArgument."""
    text = spec or DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in text.split(","):
        low = key.strip().lower()
        if len(low) == 1:
            out.append(ord(low))
            continue
        if low.startswith("ctrl-") and len(low) == 6:
            ch = low[5]
            if "a" <= ch <= "z":
                out.append(ord(ch) - ord("a") + 1)
                continue
            specials = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if ch in specials:
                out.append(specials[ch])
                continue
        raise InvalidArgument(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class DetachScanner:
    """Feeds stdin through; reports when the detach sequence was typed. Bytes that might begin
    the sequence are held back until they prove not to be it (then passed on)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""
        self.detached = False

    def feed(self, data: bytes) -> bytes:
        """The bytes to forward to the process now; sets ``detached`` when the keys matched."""
        if not self.keys:
            return data
        out = bytearray()
        for byte in data:
            if self.detached:
                break
            candidate = self._held + bytes([byte])
            if not self.keys.startswith(candidate) and self._held:
                out += self._held  # not the sequence after all; the byte may start it anew
                candidate = bytes([byte])
            if self.keys.startswith(candidate):
                if candidate == self.keys:
                    self.detached = True
                    self._held = b""
                else:
                    self._held = candidate
                continue
            out += candidate
            self._held = b""
        return bytes(out)


@dataclass
class Attachment:
    """An attach (or exec start) for a route: the shim's stream and how to frame it."""

    stream: AttachStream
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool

    def output(self) -> Iterator[bytes]:
        """The bytes to write to the client, filtered to the streams it asked for."""
        wanted = {Stream.STDOUT: self.stdout, Stream.STDERR: self.stderr}
        chunks = ((s, d) for s, d in self.stream.chunks() if wanted.get(s, False))
        return framed(chunks, self.tty)

    def send(self, data: bytes) -> None:
        if self.stdin:
            self.stream.send(data)

    def close_stdin(self) -> None:
        self.stream.close_stdin()

    def close(self) -> None:
        """Ends the stream, waking a thread blocked reading ``output()`` (a plain close of
        the socket would leave that read blocked in the kernel)."""
        with contextlib.suppress(OSError):
            self.stream.sock.shutdown(socket.SHUT_RDWR)
        self.stream.close()
