"""The embedded resolver's sockets for real: busybox ``nslookup`` in a network namespace asks
a Resolver listening on port 53 of the host end of a veth pair (as a container asks its
bridge's gateway). Unknown names go to a fake upstream on the host's 127.0.0.1. Root."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pydeskd.network.dns import Resolver
from tests.unit.network_dns.fake_upstream import FakeUpstream

BUSYBOX = "busybox"
_TCP_QUERY = """
import socket, struct, sys
query = struct.pack("!HHHHHH", 7, 0x100, 1, 0, 0, 0) + b"\\x03web\\x00\\x00\\x01\\x00\\x01"
with socket.create_connection((sys.argv[1], 53), timeout=10) as s:
    s.sendall(struct.pack("!H", len(query)) + query)
    answer = s.recv(4096)[2:]
flags, _, ancount = struct.unpack_from("!HHH", answer, 2)
print(flags & 0xF, ancount)
"""


@dataclass
class Link:
    netns: str
    host_ip: str
    container_ip: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def link() -> Iterator[Link]:
    """A namespace and a veth pair to it, on a /30 picked at random in 10.253.0.0/16."""
    tag = uuid.uuid4().hex[:6]
    netns, host_end = f"pydns-{tag}", f"pdns{tag}h"
    base = random.randrange(0, 16384) * 4
    host_ip = f"10.253.{base // 256}.{base % 256 + 1}"
    container_ip = f"10.253.{base // 256}.{base % 256 + 2}"
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("-n", netns, "addr", "add", f"{container_ip}/30", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        yield Link(netns, host_ip, container_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_end], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


def _nslookup(link: Link, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", link.netns, BUSYBOX, "nslookup", *args,
                           link.host_ip], check=False, capture_output=True, text=True, timeout=30)


def test_nslookup_in_a_namespace_gets_local_names_and_forwarded_ones(
        link: Link, upstream: FakeUpstream) -> None:
    asked: list[tuple[str, str]] = []

    def lookup(client_ip: str, name: str) -> list[str] | None:
        asked.append((client_ip, name))
        return {"web": ["172.30.0.2"], "gone": []}.get(name)

    upstream.answers["example.org"] = ["203.0.113.7"]
    resolver = Resolver(lookup, [upstream.address])
    try:
        resolver.listen(link.host_ip)
        resolver.listen(link.host_ip)  # idempotent
        web = _nslookup(link, "web")
        assert web.returncode == 0, web.stdout + web.stderr
        assert "172.30.0.2" in web.stdout
        assert (link.container_ip, "web") in asked  # the client seen from the host side

        forwarded = _nslookup(link, "example.org")
        assert forwarded.returncode == 0, forwarded.stdout + forwarded.stderr
        assert "203.0.113.7" in forwarded.stdout
        assert "example.org" in {name for _, name in upstream.udp_questions}

        gone = _nslookup(link, "gone")
        assert gone.returncode != 0
        assert "NXDOMAIN" in gone.stdout + gone.stderr

        # busybox has no TCP mode: a TCP query from the namespace, by this interpreter.
        tcp = subprocess.run(["ip", "netns", "exec", link.netns, sys.executable, "-c", _TCP_QUERY,
                              link.host_ip], check=False, capture_output=True, text=True,
                             timeout=30)
        assert tcp.returncode == 0, tcp.stderr
        assert tcp.stdout.split() == ["0", "1"]  # NOERROR, one answer
    finally:
        resolver.close()
    after = _nslookup(link, "web")
    assert after.returncode != 0  # nothing serves any more
