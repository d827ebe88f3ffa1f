"""The DNS message codec (RFC 1035) the embedded resolver needs, and nothing more.

Sans-io: bytes in, dataclasses out, and back. It parses a query's header, its one question
and the client's EDNS payload size (RFC 6891, the OPT record), and it builds the answers the
resolver gives itself (A/AAAA records, NODATA, NXDOMAIN, SERVFAIL, FORMERR, NOTIMP, truncated).
Forwarded answers are never parsed: they are relayed as the upstream sent them, only their id
rewritten.

Every parse error is a :class:`WireError` (a ValueError): packets come from any process on the
network, so this module must never raise anything else on hostile input (compression pointer
loops, labels past the end, names over 255 bytes) and never loop or allocate without bound.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct("!HHHHHH")
HEADER_SIZE = HEADER.size
CLASSIC_UDP_SIZE = 512          # the largest UDP message a client without EDNS accepts
MAX_NAME = 255                  # RFC 1035 2.3.4, on the wire, length octets included
MAX_LABEL = 63
MAX_POINTERS = 64               # more jumps than any real name needs (127 labels at most)
CLASS_IN = 1
DEFAULT_TTL = 600               # Docker's embedded DNS answers with 600 s

# Flag bits of the header's second word.
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
OPCODE_SHIFT = 11


class QType(IntEnum):
    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    MX = 15
    TXT = 16
    AAAA = 28
    SRV = 33
    OPT = 41
    ANY = 255


class RCode(IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


class WireError(ValueError):
    """The bytes are not a DNS message this codec accepts."""


@dataclass(frozen=True)
class Header:
    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & QR)

    @property
    def opcode(self) -> int:
        return (self.flags >> OPCODE_SHIFT) & 0xF

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TC)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


@dataclass(frozen=True)
class Question:
    name: str          # as sent (case kept), no trailing dot; "" for the root
    qtype: int
    qclass: int
    wire: bytes        # the question section's bytes as the client sent them (echoed back)


@dataclass(frozen=True)
class Query:
    header: Header
    question: Question
    udp_size: int      # the largest UDP answer the client takes (EDNS, else 512)
    edns: bool         # whether the client sent an OPT record (then the answer carries one)


def parse_header(data: bytes) -> Header:
    if len(data) < HEADER_SIZE:
        raise WireError(f"message of {len(data)} bytes is shorter than a header")
    return Header(*HEADER.unpack_from(data, 0))


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset just past it (past its first pointer, if any).
    Compression pointers must point backwards, and are followed at most MAX_POINTERS times."""
    labels: list[str] = []
    wire_length = 1
    end = -1              # where the name ends in the message, once a pointer was followed
    jumps = 0
    position = offset
    while True:
        if position >= len(data):
            raise WireError("name runs past the end of the message")
        length = data[position]
        kind = length & 0xC0
        if kind == 0xC0:
            if position + 1 >= len(data):
                raise WireError("compression pointer runs past the end of the message")
            target = ((length & 0x3F) << 8) | data[position + 1]
            if target >= position:
                raise WireError("compression pointer does not point backwards")
            jumps += 1
            if jumps > MAX_POINTERS:
                raise WireError("too many compression pointers")
            if end < 0:
                end = position + 2
            position = target
            continue
        if kind:
            raise WireError(f"unsupported label type 0x{kind:02x}")
        if length == 0:
            return ".".join(labels), (end if end >= 0 else position + 1)
        wire_length += length + 1
        if wire_length > MAX_NAME:
            raise WireError("name longer than 255 bytes")
        label = data[position + 1:position + 1 + length]
        if len(label) != length:
            raise WireError("label runs past the end of the message")
        # Latin-1 maps every byte to one character: names round-trip whatever they hold.
        labels.append(label.decode("latin-1"))
        position += 1 + length


def encode_name(name: str) -> bytes:
    """A name in wire form, uncompressed. Raises WireError if it cannot be encoded."""
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            try:
                raw = label.encode("latin-1")
            except UnicodeEncodeError:
                raise WireError(f"cannot encode name {name!r}") from None
            if not raw or len(raw) > MAX_LABEL:
                raise WireError(f"cannot encode name {name!r}")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise WireError(f"name {name!r} is longer than 255 bytes")
    return bytes(out)


def build_query(message_id: int, name: str, qtype: int = QType.A, *, recursion: bool = True,
                edns_size: int | None = None) -> bytes:
    """A standard query for one name (tests, and the benchmark's probes)."""
    flags = RD if recursion else 0
    opt = b""
    if edns_size is not None:
        opt = b"\x00" + struct.pack("!HHIH", QType.OPT, edns_size, 0, 0)
    header = HEADER.pack(message_id, flags, 1, 0, 0, 1 if opt else 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN) + opt


def _skip_record(data: bytes, offset: int) -> tuple[int, int, int]:
    """Skips one resource record: returns (its type, its class, the offset past it)."""
    _, offset = read_name(data, offset)
    if offset + 10 > len(data):
        raise WireError("record header runs past the end of the message")
    rtype, rclass, _ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
    offset += 10 + rdlength
    if offset > len(data):
        raise WireError("record data runs past the end of the message")
    return rtype, rclass, offset


def parse_query(data: bytes) -> Query:
    """A query with exactly one question. Raises WireError (the caller answers FORMERR when
    the header could be read, see :func:`parse_header`)."""
    header = parse_header(data)
    if header.is_response:
        raise WireError("message is a response, not a query")
    if header.qdcount != 1:
        raise WireError(f"query has {header.qdcount} questions, not one")
    name, offset = read_name(data, HEADER_SIZE)
    if offset + 4 > len(data):
        raise WireError("question runs past the end of the message")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    question = Question(name, qtype, qclass, data[HEADER_SIZE:offset + 4])
    offset += 4
    udp_size, edns = CLASSIC_UDP_SIZE, False
    # A query's other sections are normally empty but for the OPT record; they are walked
    # (bounded: each record consumes bytes) only to find it.
    for _ in range(header.ancount + header.nscount + header.arcount):
        start = offset
        rtype, rclass, offset = _skip_record(data, offset)
        if rtype == QType.OPT and data[start] == 0:
            edns = True
            udp_size = max(CLASSIC_UDP_SIZE, min(rclass, 65535))
    return Query(header, question, udp_size, edns)


# The OPT record an answer carries when the query had one: root name, type OPT, our UDP
# payload size (1232, the DNS flag day's safe value), extended rcode 0, version 0, no options.
EDNS_SIZE = 1232
OPT_RECORD = b"\x00" + struct.pack("!HHIH", QType.OPT, EDNS_SIZE, 0, 0)


def build_response(query: Query, rcode: RCode, answers: Sequence[str] = (), *,
                   authoritative: bool = True, ttl: int = DEFAULT_TTL,
                   max_size: int | None = None) -> bytes:
    """The answer to ``query``: its question echoed, then one A or AAAA record per address
    (each a name pointer to the question). Answers that do not fit ``max_size`` (default:
    the client's UDP size) are dropped and the TC bit set, so the client retries over TCP."""
    flags = QR | (query.header.flags & (0xF << OPCODE_SHIFT)) | (query.header.flags & RD) | RA
    if authoritative:
        flags |= AA
    flags |= int(rcode)
    limit = query.udp_size if max_size is None else max_size
    opt = OPT_RECORD if query.edns else b""
    records: list[bytes] = []
    size = HEADER_SIZE + len(query.question.wire) + len(opt)
    for address in answers:
        record = _address_record(address, ttl)
        if size + len(record) > limit:
            flags |= TC
            break
        records.append(record)
        size += len(record)
    header = HEADER.pack(query.header.id, flags, 1, len(records), 0, 1 if opt else 0)
    return b"".join([header, query.question.wire, *records, opt])


def _address_record(address: str, ttl: int) -> bytes:
    ip = ipaddress.ip_address(address)
    rtype = QType.A if ip.version == 4 else QType.AAAA
    # 0xC00C: the question's name, right after the header.
    return struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, ttl, len(ip.packed)) + ip.packed


def error_from_header(data: bytes, rcode: RCode) -> bytes | None:
    """A bare error answer (no question) for a message whose question could not be read:
    None when not even its header could (or it is a response: never answer those)."""
    try:
        header = parse_header(data)
    except WireError:
        return None
    if header.is_response:
        return None
    flags = QR | (header.flags & (0xF << OPCODE_SHIFT)) | (header.flags & RD) | RA | int(rcode)
    return HEADER.pack(header.id, flags, 0, 0, 0, 0)


def with_id(message: bytes, message_id: int) -> bytes:
    """The message with its id replaced (the forwarded answer goes back with the client's)."""
    return struct.pack("!H", message_id) + message[2:]
