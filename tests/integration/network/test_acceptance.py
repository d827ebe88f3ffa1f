"""Issue 5's acceptance through the official docker CLI: names and aliases on a user network
(wget, nslookup), isolation between networks, ``--internal``, outbound NAT to an "outside"
namespace, published ports (127.0.0.1, the host's address, another namespace; /udp; -P;
``docker port``), a taken port, and bad input that creates nothing. Root."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.network.conftest import (
    BUSYBOX,
    curl,
    free_port,
    free_subnet,
    out,
    unique,
)
from tests.integration.network.outside import Outside
from tests.support.pydeskd import Pydeskd

pytestmark = pytest.mark.integration


def httpd(d: Pydeskd, name: str, *args: str, text: str = "") -> str:
    """A detached busybox httpd serving ``text`` (default: its name) on port 80."""
    page = text or f"hello from {name}"
    return out(d, "run", "-d", "--name", name, *args, BUSYBOX, "sh", "-c",
               f"mkdir -p /www && echo '{page}' > /www/index.html && "
               f"exec httpd -f -p 80 -h /www")


def run(d: Pydeskd, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return d.docker("run", "--rm", *args, check=False, timeout=timeout)


def eventually(check: object, timeout: float = 20.0) -> str:
    """Calls ``check`` until it returns without raising (httpd needs a moment)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(check())
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def host_address() -> str:
    route = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True,
                           text=True, check=True).stdout.split()
    return route[route.index("src") + 1]


def test_names_aliases_and_isolation(d: Pydeskd) -> None:
    net, other = unique("app"), unique("other")
    out(d, "network", "create", net)
    out(d, "network", "create", "--subnet", free_subnet(), other)
    server = unique("db")
    httpd(d, server, "--network", net, "--network-alias", "database")
    for name in (server, "database"):
        got = eventually(lambda name=name: _wget(d, net, name))  # type: ignore[misc]
        assert f"hello from {server}" in got
    lookup = run(d, "--network", net, BUSYBOX, "busybox", "nslookup", "database")
    assert lookup.returncode == 0, lookup.stderr
    ip = json.loads(out(d, "inspect", server))[0]["NetworkSettings"]["Networks"][net][
        "IPAddress"]
    assert ip in lookup.stdout.decode()
    # Another network: the name is unknown there, and the address is not reachable.
    assert run(d, "--network", other, BUSYBOX, "busybox", "nslookup", "database").returncode != 0
    assert fetch(d, "--network", other, target=ip) == ""


# Debian's static busybox wget crashes (SIGSEGV) in a container for any address but loopback
# and cannot resolve names (static glibc's NSS dlopen), so HTTP from a container is
# ``printf GET | nc``, and a fetch by name asks the embedded resolver with busybox's own
# nslookup first: name -> address through DNS, then HTTP to that address.
def http_get(target: str, port: int = 80, path: str = "/") -> str:
    return (f"printf 'GET {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | "
            f"busybox nc -w 5 {target} {port}")


_BY_NAME = ("ip=$(busybox nslookup {name} | busybox awk '/^Name:/{{n=1}} n && /^Address/"
            "{{print $2}}' | busybox tail -n 1) && test -n \"$ip\" && ")


def _wget(d: Pydeskd, net: str, name: str) -> str:
    done = run(d, "--network", net, BUSYBOX, "sh", "-c",
               _BY_NAME.format(name=name) + http_get("$ip"))
    assert done.returncode == 0 and b"200 OK" in done.stdout, done.stderr
    return done.stdout.decode()


def fetch(d: Pydeskd, *args: str, target: str, port: int = 80, path: str = "/") -> str:
    """An HTTP GET from a new container (``args``: its run options); the response, or ""."""
    done = run(d, *args, BUSYBOX, "sh", "-c", http_get(target, port, path))
    return done.stdout.decode() if b"200 OK" in done.stdout else ""


@pytest.fixture
def outside() -> object:
    with Outside(free_subnet(), free_port()) as o:
        yield o


def test_outbound_nat_reaches_an_outside_server(d: Pydeskd, outside: Outside) -> None:
    page = fetch(d, target=outside.server_ip, port=outside.port, path="/index.html")
    assert page.endswith("outside says hi\n")
    net = unique("user")
    out(d, "network", "create", net)
    page = fetch(d, "--network", net, target=outside.server_ip, port=outside.port,
                 path="/index.html")
    assert page.endswith("outside says hi\n")


def test_internal_network_has_no_way_out(d: Pydeskd, outside: Outside) -> None:
    net = unique("internal")
    out(d, "network", "create", "--internal", net)
    peer = unique("peer")
    httpd(d, peer, "--network", net)
    assert "hello from" in eventually(lambda: _wget(d, net, peer))  # inside: fine
    assert fetch(d, "--network", net, target=outside.server_ip, port=outside.port) == ""


def test_published_port_from_everywhere(d: Pydeskd, outside: Outside) -> None:
    port = free_port()
    name = unique("web")
    httpd(d, name, "-p", f"{port}:80")
    for url in (f"http://127.0.0.1:{port}/", f"http://{host_address()}:{port}/"):
        assert f"hello from {name}" in eventually(lambda url=url: curl(url))  # type: ignore[misc]
    # ::1: the kernel's IPv4 path cannot serve it, the userland proxy does.
    assert f"hello from {name}" in curl(f"http://[::1]:{port}/")
    assert f"hello from {name}" in curl(f"http://localhost:{port}/")
    got = curl(f"http://{outside.host_ip}:{port}/", netns=outside.netns)
    assert f"hello from {name}" in got
    assert out(d, "port", name) == f"80/tcp -> 0.0.0.0:{port}"
    ps = out(d, "ps", "--filter", f"name={name}", "--format", "{{.Ports}}")
    assert ps == f"0.0.0.0:{port}->80/tcp"
    assert out(d, "ps", "--filter", f"publish={port}", "--format", "{{.Names}}") == name
    assert out(d, "ps", "--filter", "network=bridge", "--filter", "expose=80/tcp",
               "--format", "{{.Names}}") == name
    # The page went out through the container's eth0: stats count it (from the host veth).
    net_io = out(d, "stats", "--no-stream", "--format", "{{.NetIO}}", name)
    assert not net_io.startswith("0B"), net_io


def test_published_port_on_one_address(d: Pydeskd) -> None:
    port = free_port()
    name = unique("lo")
    httpd(d, name, "-p", f"127.0.0.1:{port}:80")
    assert f"hello from {name}" in eventually(lambda: curl(f"http://127.0.0.1:{port}/"))
    assert out(d, "port", name, "80") == f"127.0.0.1:{port}"


def test_udp_port_reaches_the_container(d: Pydeskd) -> None:
    port = free_port(socket.SOCK_DGRAM)
    name = unique("udp")
    out(d, "run", "-d", "--name", name, "-p", f"{port}:5353/udp", BUSYBOX, "sleep", "300")

    def no_ports() -> int:
        snmp = out(d, "exec", name, "cat", "/proc/net/snmp").splitlines()
        header, values = [line.split() for line in snmp if line.startswith("Udp:")][:2]
        return int(values[header.index("NoPorts")])

    before = no_ports()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(b"ping", ("127.0.0.1", port))
    # Nothing listens on 5353 in the container: its kernel counts the datagrams it got.
    eventually(lambda: _more(no_ports(), before))
    assert out(d, "port", name) == f"5353/udp -> 0.0.0.0:{port}"


def _more(now: int, before: int) -> None:
    assert now > before


def test_publish_all_maps_every_exposed_port(d: Pydeskd) -> None:
    name = unique("all")
    httpd(d, name, "--expose", "80", "--expose", "9000/udp", "-P")
    ports = json.loads(out(d, "inspect", name))[0]["NetworkSettings"]["Ports"]
    assert set(ports) == {"80/tcp", "9000/udp"}
    http = int(ports["80/tcp"][0]["HostPort"])
    assert 32768 <= http <= 60999
    assert f"hello from {name}" in eventually(lambda: curl(f"http://127.0.0.1:{http}/"))
    random_port = httpd(d, unique("rnd"), "-p", "80")
    assert out(d, "port", random_port, "80").startswith("0.0.0.0:")


def test_a_taken_port_is_a_clear_error_before_start(d: Pydeskd) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        name = unique("taken")
        done = d.docker("run", "-d", "--name", name, "-p", f"{port}:80", BUSYBOX,
                        "sleep", "60", check=False)
    assert done.returncode == 125
    assert f"Bind for 0.0.0.0:{port} failed: port is already allocated" in \
        done.stderr.decode()
    state = json.loads(out(d, "inspect", name))[0]
    assert state["State"]["Status"] == "created"
    assert state["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""
    netns_dir = d.exec_root / "netns"
    assert not netns_dir.exists() or not list(netns_dir.iterdir())


def _links() -> set[str]:
    """pydesk user bridges on the host (a test checks that none appeared: other suites'
    daemons running in parallel make and remove default bridges and veths all the time)."""
    text = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                          check=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in text.splitlines()}
    return {n for n in names if n.startswith("pd-")}


def _records(d: Pydeskd) -> set[str]:
    return {p.name for p in (d.data_root / "network" / "networks").iterdir()}


@pytest.mark.parametrize(("args", "message"), [
    (["--subnet", "300.1.1.0/24"], "invalid CIDR address: 300.1.1.0/24"),
    (["--subnet", "10.77.0.0/24", "--gateway", "10.78.0.1"], "no matching subnet for gateway"),
])
def test_bad_network_input_creates_nothing(d: Pydeskd, args: list[str], message: str) -> None:
    before_links, before = _links(), out(d, "network", "ls", "-q")
    records = _records(d)
    done = d.docker("network", "create", *args, unique("bad"), check=False)
    assert done.returncode != 0 and message in done.stderr.decode()
    assert out(d, "network", "ls", "-q") == before
    assert not _links() - before_links and _records(d) == records


def test_overlap_unknown_network_and_duplicates(d: Pydeskd) -> None:
    subnet = free_subnet()
    first = unique("first")
    out(d, "network", "create", "--subnet", subnet, first)
    before_links, before = _links(), out(d, "network", "ls", "-q")
    records = _records(d)
    done = d.docker("network", "create", "--subnet", subnet, unique("second"), check=False)
    assert "Pool overlaps with other one on this address space" in done.stderr.decode()
    done = d.docker("network", "create", first, check=False)
    assert f"network with name {first} already exists" in done.stderr.decode()
    done = d.docker("run", "--rm", "--network", "nope-net", BUSYBOX, "true", check=False)
    assert done.returncode == 125 and "network nope-net not found" in done.stderr.decode()
    done = d.docker("network", "rm", "nope-net", check=False)
    assert "network nope-net not found" in done.stderr.decode()
    assert out(d, "network", "ls", "-q") == before
    assert not _links() - before_links and _records(d) == records


def test_network_cli_round_trip(d: Pydeskd) -> None:
    since = str(int(time.time()) - 1)
    net = unique("cli")
    subnet = free_subnet()
    gateway = subnet.replace(".0/24", ".254")
    net_id = out(d, "network", "create", "--subnet", subnet, "--gateway", gateway,
                 "--ip-range", subnet.replace(".0/24", ".128/25"), "--label", "k=v", net)
    got = json.loads(out(d, "network", "inspect", net))[0]
    assert got["Id"] == net_id and got["Labels"] == {"k": "v"}
    assert got["IPAM"]["Config"][0]["Gateway"] == gateway
    assert net in out(d, "network", "ls", "--filter", "label=k=v", "--format", "{{.Name}}")
    name = unique("c")
    out(d, "run", "-d", "--name", name, BUSYBOX, "sleep", "300")
    out(d, "network", "connect", "--alias", "extra", net, name)
    inside = out(d, "exec", name, "busybox", "ip", "-4", "-o", "addr", "show", "eth1")
    assert subnet.replace(".0/24", ".129") in inside   # the first address of the ip-range
    members = json.loads(out(d, "network", "inspect", net))[0]["Containers"]
    assert [m["Name"] for m in members.values()] == [name]
    with pytest.raises(Exception, match="has active endpoints"):
        d.docker("network", "rm", net)
    out(d, "network", "disconnect", net, name)
    assert "eth1" not in out(d, "exec", name, "busybox", "ip", "-o", "link")
    static = subnet.replace(".0/24", ".7")
    pinned = out(d, "run", "-d", "--network", net, "--ip", static, BUSYBOX, "sleep", "300")
    assert json.loads(out(d, "inspect", pinned))[0]["NetworkSettings"]["Networks"][net][
        "IPAddress"] == static
    taken = d.docker("run", "-d", "--network", net, "--ip", static, BUSYBOX, "true",
                     check=False)
    assert "Address already in use" in taken.stderr.decode()
    ids = out(d, "ps", "-aq", "--filter", f"network={net}").split()
    out(d, "rm", "-f", *ids)   # the pinned one and the one that could not start
    out(d, "network", "rm", net)
    assert net not in out(d, "network", "ls", "--format", "{{.Name}}")
    events = out(d, "events", "--since", since, "--until", str(int(time.time()) + 1),
                 "--filter", "type=network", "--filter", f"network={net_id}",
                 "--format", "{{.Action}} {{index .Actor.Attributes \"container\"}}")
    cid = json.loads(out(d, "inspect", name))[0]["Id"]
    seen = [line.strip() for line in events.splitlines()]
    assert seen[:3] == ["create", f"connect {cid}", f"disconnect {cid}"]
    assert seen[-1] == "destroy"   # between: the --ip container's start and removal


def test_host_none_and_container_modes(d: Pydeskd) -> None:
    links = out(d, "run", "--rm", "--network", "none", BUSYBOX, "busybox", "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    host_links = out(d, "run", "--rm", "--network", "host", BUSYBOX, "busybox", "ip", "-o",
                     "link")
    assert len(host_links.splitlines()) > 1 and "lo" in host_links
    assert out(d, "run", "--rm", "--network", "host", BUSYBOX, "hostname") == \
        socket.gethostname()
    hosts = out(d, "run", "--rm", "--network", "host", "--add-host", "x.example:10.9.9.9",
                BUSYBOX, "cat", "/etc/hosts")
    assert hosts.startswith(Path("/etc/hosts").read_text().strip())
    assert hosts.endswith("10.9.9.9\tx.example")
    main = unique("main")
    httpd(d, main)
    page = eventually(lambda: _must(fetch(d, "--network", f"container:{main}",
                                          target="127.0.0.1")))
    assert f"hello from {main}" in page
    settings = json.loads(out(d, "inspect", main))[0]["NetworkSettings"]
    joined = out(d, "run", "--rm", "--network", f"container:{main}", BUSYBOX, "busybox", "ip",
                 "-4", "-o", "addr", "show", "eth0")
    assert settings["IPAddress"] in joined


def _must(text: str) -> str:
    assert text
    return text


def test_etc_files(d: Pydeskd) -> None:
    net = unique("etc")
    out(d, "network", "create", net)
    gateway = json.loads(out(d, "network", "inspect", net))[0]["IPAM"]["Config"][0]["Gateway"]
    name = unique("files")
    out(d, "run", "-d", "--name", name, "--network", net, "--hostname", "myhost",
        "--add-host", "extra.example:10.1.2.3", "--add-host", "gw.example:host-gateway",
        "--dns-search", "corp.example", "--dns-option", "ndots:2", BUSYBOX, "sleep", "300")
    ip = json.loads(out(d, "inspect", name))[0]["NetworkSettings"]["Networks"][net]["IPAddress"]
    hosts = out(d, "exec", name, "cat", "/etc/hosts").splitlines()
    assert f"{ip}\tmyhost {name}" in hosts
    assert "10.1.2.3\textra.example" in hosts
    assert f"{gateway}\tgw.example" in hosts
    resolv = out(d, "exec", name, "cat", "/etc/resolv.conf").splitlines()
    assert resolv[0] == f"nameserver {gateway}"
    assert "search corp.example" in resolv and "options ndots:2" in resolv
    assert out(d, "exec", name, "hostname") == "myhost"
    dns = out(d, "run", "--rm", "--dns", "9.9.9.9", BUSYBOX, "cat", "/etc/resolv.conf")
    assert dns.splitlines()[0] == "nameserver 9.9.9.9"


def test_parallel_starts_get_distinct_addresses(d: Pydeskd) -> None:
    net = unique("par")
    out(d, "network", "create", "--subnet", free_subnet(), net)
    procs = [d.popen_docker("run", "-d", "--network", net, BUSYBOX, "sleep", "300",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    ids = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        ids.append(stdout.decode().strip())
    found = [c["NetworkSettings"]["Networks"][net]["IPAddress"]
             for c in json.loads(out(d, "inspect", *ids))]
    assert len(set(found)) == 8 and all(found)
    macs = {c["NetworkSettings"]["Networks"][net]["MacAddress"]
            for c in json.loads(out(d, "inspect", *ids))}
    assert len(macs) == 8


def test_legacy_links_write_hosts_lines(d: Pydeskd) -> None:
    target = unique("linked")
    httpd(d, target)
    ip = json.loads(out(d, "inspect", target))[0]["NetworkSettings"]["IPAddress"]
    hosts = out(d, "run", "--rm", "--link", f"{target}:web", BUSYBOX, "cat", "/etc/hosts")
    assert f"{ip}\tweb" in hosts.splitlines()
    page = eventually(lambda: _must(fetch(d, "--link", f"{target}:web", target=ip)))
    assert f"hello from {target}" in page
