"""The embedded resolver in a real pydeskd, through the docker CLI (review 5 #1 #5 #6 #9 #15):
names on every network of a container, ``-p 53:53/udp`` beside user networks, no way out
through DNS from an internal network, a container's ``--dns`` servers asked by the resolver,
and strangers refused. Root; the fixtures (daemon, registry, leftovers check) are issue 5's
acceptance suite's."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
from collections.abc import Iterator

import pytest

from pydeskd.network import dns_wire as w
from tests.integration.network.conftest import (  # noqa: F401 -- fixtures used by name
    BUSYBOX,
    busybox_mirror,
    d,
    daemon,
    no_leftovers,
    out,
    unique,
)
from tests.support.pydeskd import Pydeskd
from tests.unit.network_dns.fake_upstream import FakeUpstream


def _run(d: Pydeskd, *args: str) -> tuple[int, str]:   # noqa: F811
    done = d.docker("run", "--rm", *args, check=False, timeout=90)
    return done.returncode, (done.stdout + done.stderr).decode()


def _ip(d: Pydeskd, container: str, net: str) -> str:  # noqa: F811
    return str(json.loads(out(d, "inspect", container))[0]["NetworkSettings"]["Networks"][net][
        "IPAddress"])


def _gateway(d: Pydeskd, net: str) -> str:  # noqa: F811
    return str(json.loads(out(d, "network", "inspect", net))[0]["IPAM"]["Config"][0][
        "Gateway"])


def test_a_container_on_two_networks_resolves_both_and_53_can_be_published(
        d: Pydeskd) -> None:  # noqa: F811
    front, back = unique("front"), unique("back")
    out(d, "network", "create", front)
    out(d, "network", "create", back)
    db, proxy = unique("db"), unique("proxy")
    out(d, "run", "-d", "--name", db, "--network", back, "--network-alias", "database",
        BUSYBOX, "sleep", "300")
    out(d, "run", "-d", "--name", proxy, "--network", front, BUSYBOX, "sleep", "300")
    out(d, "network", "connect", back, proxy)
    found = d.docker("exec", proxy, "busybox", "nslookup", "database", check=False, timeout=60)
    assert found.returncode == 0, found.stdout + found.stderr
    assert _ip(d, db, back) in found.stdout.decode()
    # Port 53 of the host is not the resolver's: it can be published beside user networks,
    # and the containers' DNS still goes to the resolver (the DNAT of <gateway>:53 first).
    published = unique("dns53")
    done = d.docker("run", "-d", "--name", published, "-p", "53:53/udp", BUSYBOX, "sleep",
                    "300", check=False)
    holders = subprocess.run(["ss", "-Hlunp", "sport", "= :53"], capture_output=True,
                             text=True, check=False).stdout
    assert done.returncode == 0, f"{done.stderr.decode()}\nUDP port 53 held by:\n{holders}"
    again = d.docker("exec", proxy, "busybox", "nslookup", db, check=False, timeout=60)
    assert again.returncode == 0 and _ip(d, db, back) in again.stdout.decode(), \
        again.stdout + again.stderr


# A name the host's resolvers answer here (the package registries are reachable).
@pytest.fixture
def own_upstream() -> Iterator[FakeUpstream]:
    """A resolver on port 53 of a random 127/8 address (``--dns`` takes no port)."""
    host = f"127.{random.randrange(1, 255)}.{random.randrange(0, 255)}.{random.randrange(1, 255)}"
    fake = FakeUpstream(host, 53)
    yield fake
    fake.close()


def test_an_internal_network_gets_nxdomain_for_outside_names(
        d: Pydeskd, own_upstream: FakeUpstream) -> None:  # noqa: F811
    # The outside is a resolver of the test's own (the containers' --dns), so the host's
    # resolvers play no part: the open network's query reaches it, the sealed one's must not.
    own_upstream.answers["outside.example"] = ["203.0.113.78"]
    sealed, open_net = unique("sealed"), unique("open")
    out(d, "network", "create", "--internal", sealed)
    out(d, "network", "create", open_net)
    code, text = _run(d, "--network", open_net, "--dns", own_upstream.host, BUSYBOX, "busybox",
                      "nslookup", "outside.example")
    assert code == 0 and "203.0.113.78" in text, text  # the control: forwarded and answered
    asked = len(own_upstream.udp_questions)
    peer = unique("peer")
    out(d, "run", "-d", "--name", peer, "--network", sealed, BUSYBOX, "sleep", "300")
    code, text = _run(d, "--network", sealed, "--dns", own_upstream.host, BUSYBOX, "busybox",
                      "nslookup", "outside.example")
    assert code != 0 and "NXDOMAIN" in text, text
    assert len(own_upstream.udp_questions) == asked, "an internal network's query went out"
    code, text = _run(d, "--network", sealed, BUSYBOX, "busybox", "nslookup", peer)
    assert code == 0 and _ip(d, peer, sealed) in text, text


def test_a_containers_dns_servers_are_asked_by_the_resolver(
        d: Pydeskd, own_upstream: FakeUpstream) -> None:  # noqa: F811
    app = unique("app")
    out(d, "network", "create", app)
    own_upstream.answers["only-here.example"] = ["203.0.113.77"]
    code, text = _run(d, "--network", app, "--dns", own_upstream.host, BUSYBOX, "sh", "-c",
                      "cat /etc/resolv.conf; busybox nslookup only-here.example")
    servers = re.findall(r"^nameserver (\S+)", text, re.M)
    assert servers == [_gateway(d, app)], text
    assert code == 0 and "203.0.113.77" in text, text
    assert "only-here.example" in {name for _, name in own_upstream.udp_questions}


def _resolver_port(gateway: str) -> int:
    done = subprocess.run(["ss", "-Hlun", "src", gateway], capture_output=True, text=True,
                          check=True)
    ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in done.stdout.splitlines()}
    assert len(ports) == 1 and 53 not in ports, done.stdout
    return ports.pop()


def test_the_resolver_answers_no_stranger(d: Pydeskd) -> None:  # noqa: F811
    app = unique("app")
    out(d, "network", "create", app)
    web = unique("web")
    out(d, "run", "-d", "--name", web, "--network", app, BUSYBOX, "sleep", "300")
    gateway = _gateway(d, app)
    port = _resolver_port(gateway)
    # From the host (source: the gateway's own address, inside the subnet): refused or
    # dropped by the firewall, never answered.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for target in ((gateway, port), (gateway, 53)):
            sock.sendto(w.build_query(0x77, web), target)
            try:
                answer = sock.recv(4096)
            except (TimeoutError, ConnectionRefusedError):
                continue
            assert w.parse_header(answer).rcode == w.RCode.REFUSED, target


def test_dns_keeps_working_across_a_daemon_kill9(
        d: Pydeskd, own_upstream: FakeUpstream) -> None:  # noqa: F811
    """The restarted daemon may get another port: the DNAT follows it, and a live-restored
    container still forwards to its own ``--dns`` servers."""
    import signal
    app = unique("app")
    out(d, "network", "create", app)
    own_upstream.answers["only-here.example"] = ["203.0.113.78"]
    web = unique("web")
    out(d, "run", "-d", "--name", web, "--network", app, "--dns", own_upstream.host,
        BUSYBOX, "sleep", "300")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.proc = None
    d.start()
    for name, address in ((web, _ip(d, web, app)), ("only-here.example", "203.0.113.78")):
        done = d.docker("exec", web, "busybox", "nslookup", name, check=False, timeout=60)
        assert done.returncode == 0 and address in done.stdout.decode(), \
            done.stdout + done.stderr
