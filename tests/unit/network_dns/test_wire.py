"""The DNS codec (pydeskd.network.dns_wire): queries parsed, answers built, and hostile bytes
refused with WireError only (never another exception, never a loop)."""

from __future__ import annotations

import random
import struct

import pytest

from pydeskd.network import dns_wire as w


def test_a_query_round_trips_its_name_type_and_id() -> None:
    query = w.parse_query(w.build_query(0x1234, "Web.Example", w.QType.AAAA))
    assert query.header.id == 0x1234
    assert query.question.name == "Web.Example"
    assert query.question.qtype == w.QType.AAAA
    assert query.question.qclass == w.CLASS_IN
    assert query.udp_size == 512
    assert not query.edns


def test_edns_payload_size_is_read_from_the_opt_record() -> None:
    query = w.parse_query(w.build_query(1, "a", edns_size=4096))
    assert query.edns
    assert query.udp_size == 4096
    # A size below 512 means 512 (RFC 6891 6.2.5).
    assert w.parse_query(w.build_query(1, "a", edns_size=100)).udp_size == 512


def test_an_answer_carries_a_records_with_ttl_600_and_echoes_the_question() -> None:
    data = w.build_query(7, "db", w.QType.A)
    answer = w.build_response(w.parse_query(data), w.RCode.NOERROR, ["172.18.0.2", "172.18.0.3"])
    header = w.parse_header(answer)
    assert header.id == 7
    assert header.is_response
    assert header.flags & w.AA
    assert header.flags & w.RD  # copied from the query
    assert header.rcode == w.RCode.NOERROR
    assert (header.qdcount, header.ancount) == (1, 2)
    question_end = w.HEADER_SIZE + len(w.encode_name("db")) + 4
    assert answer[w.HEADER_SIZE:question_end] == data[w.HEADER_SIZE:]
    first = answer[question_end:question_end + 16]
    pointer, rtype, rclass, ttl, length = struct.unpack("!HHHIH", first[:12])
    assert (pointer, rtype, rclass, ttl, length) == (0xC00C, w.QType.A, 1, 600, 4)
    assert first[12:] == bytes([172, 18, 0, 2])


def test_an_aaaa_record_is_built_for_an_ipv6_address() -> None:
    query = w.parse_query(w.build_query(7, "db", w.QType.AAAA))
    answer = w.build_response(query, w.RCode.NOERROR, ["fd00::2"])
    assert struct.unpack_from("!H", answer, len(answer) - 28 + 2)[0] == w.QType.AAAA
    assert answer.endswith(bytes.fromhex("fd000000000000000000000000000002"))


def test_answers_past_the_clients_udp_size_are_dropped_with_the_tc_bit() -> None:
    query = w.parse_query(w.build_query(7, "many", w.QType.A))
    addresses = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(100)]
    answer = w.build_response(query, w.RCode.NOERROR, addresses)
    header = w.parse_header(answer)
    assert len(answer) <= 512
    assert header.truncated
    assert 0 < header.ancount < 100
    big = w.build_response(query, w.RCode.NOERROR, addresses, max_size=65535)
    assert w.parse_header(big).ancount == 100
    assert not w.parse_header(big).truncated


def test_an_edns_query_gets_an_opt_record_back() -> None:
    query = w.parse_query(w.build_query(7, "x", edns_size=1232))
    answer = w.build_response(query, w.RCode.NXDOMAIN)
    assert w.parse_header(answer).arcount == 1
    assert answer.endswith(w.OPT_RECORD)
    assert w.parse_header(answer).rcode == w.RCode.NXDOMAIN


def test_compression_pointers_are_followed_backwards_only() -> None:
    # "b" then a pointer back to "example" earlier in the buffer.
    data = b"\x07example\x00" + b"\x01b\xc0\x00"
    assert w.read_name(data, 9) == ("b.example", 13)
    with pytest.raises(w.WireError, match="backwards"):
        w.read_name(b"\xc0\x00", 0)  # points to itself: a loop
    with pytest.raises(w.WireError, match="backwards"):
        w.read_name(b"\x01a\xc0\x04\x01b\xc0\x00", 0)  # forward jump (then back: a cycle)


def test_names_over_255_bytes_and_labels_past_the_end_are_refused() -> None:
    with pytest.raises(w.WireError, match="255"):
        w.read_name(b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63
                    + b"\x3f" + b"a" * 63 + b"\x00", 0)
    with pytest.raises(w.WireError, match="past the end"):
        w.read_name(b"\x05ab", 0)
    with pytest.raises(w.WireError, match="label type"):
        w.read_name(b"\x40", 0)
    with pytest.raises(w.WireError):
        w.encode_name("a" * 64)
    with pytest.raises(w.WireError):
        w.encode_name("a..b")


@pytest.mark.parametrize("data, reason", [
    (b"", "shorter than a header"),
    (w.build_query(1, "a")[:14], "past the end"),
    (struct.pack("!HHHHHH", 1, w.QR, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01", "response"),
    (struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01", "questions"),
    (w.build_query(1, "a", edns_size=1232)[:-3], "record header"),
])
def test_malformed_queries_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(w.WireError, match=reason):
        w.parse_query(data)


def test_a_bare_error_answers_what_only_has_a_header() -> None:
    answer = w.error_from_header(struct.pack("!HHHHHH", 9, w.RD, 1, 0, 0, 0) + b"\xff",
                                 w.RCode.FORMERR)
    assert answer is not None
    header = w.parse_header(answer)
    assert (header.id, header.rcode, header.qdcount) == (9, w.RCode.FORMERR, 0)
    assert header.is_response
    assert w.error_from_header(b"\x00", w.RCode.FORMERR) is None
    assert w.error_from_header(struct.pack("!HHHHHH", 9, w.QR, 0, 0, 0, 0),
                               w.RCode.FORMERR) is None


def test_random_bytes_raise_only_wire_errors() -> None:
    rng = random.Random(5)
    seed = w.build_query(0xBEEF, "some.name.example", w.QType.A, edns_size=1232)
    for i in range(20000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        else:  # a valid query with a few bytes flipped reaches deeper into the parser
            mutable = bytearray(seed)
            for _ in range(rng.randrange(1, 4)):
                mutable[rng.randrange(len(mutable))] = rng.getrandbits(8)
            data = bytes(mutable[:rng.randrange(len(mutable) + 1)])
        try:
            query = w.parse_query(data)
        except w.WireError:
            continue
        # Whatever parses can be answered.
        w.build_response(query, w.RCode.NOERROR, ["10.0.0.1"])


def test_with_id_replaces_only_the_id() -> None:
    data = w.build_query(1, "a")
    assert w.with_id(data, 0xABCD)[:2] == b"\xab\xcd"
    assert w.with_id(data, 0xABCD)[2:] == data[2:]
