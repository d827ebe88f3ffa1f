"""Benchmark: published ports, pydeskd against the Docker Engine: TCP throughput and conn/s.

    sudo .venv/bin/python bench/net.py [--runs 5] [--mb 200] [--seconds 2] [--threads 4] [--json]

Setup (as bench/run_latency.py): busybox (tests/support/images.py) pushed to Debian's
`docker-registry` on 127.0.0.1 as `library/busybox:latest`; a real `pydeskd` and a private
Debian dockerd **with its bridge and iptables** (docker0 on a free /24, DNAT, docker-proxy: as
installed), both pulling busybox through that registry as their mirror. On each engine, one
container with `-p HTTP:80 -p SINK:81`: busybox `httpd` serving a file of --mb MiB and a small
page, and `nc -ll -e` counting what each connection sends (`wc -c`).

From the host, through 127.0.0.1 and through the host's own address (its default route's source),
each round measures on each engine in turn (the order flips every round, after one untimed
warm-up round):

- `download`: one GET of the big file (MB/s, container -> host);
- `upload`:   --mb MiB sent into `nc` and counted there (MB/s, host -> container);
- `conn/s`:   --threads client threads doing short GETs of the small page for --seconds each
              (connect, request, read to EOF: one connection per GET).

Prints the median per metric, address and engine, and the ratio pydeskd / Docker (target: >= 1.0
for all). Needs root. Leaves nothing behind: containers, both daemons (Docker's bridge, rules and
sysctls included), the registry, every file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Run as a plain script from the repository: make `tests.support` and the sources importable.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "guest")]

from tests.support.docker_cli import DockerCli  # noqa: E402
from tests.support.docker_engine import DockerEngine  # noqa: E402
from tests.support.images import build_single  # noqa: E402
from tests.support.pydeskd import Pydeskd  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

IMAGE = "busybox:latest"
METRICS = ("download", "upload", "conn/s")
SMALL_PAGE = b"<html>pydesk bench</html>\n"
# The container: the big file and the page for httpd (which daemonizes), then a persistent nc
# whose every connection runs /count: dd reads whole MiBs (wc -c reads 4 KiB at a time, ~180
# MB/s here: it, not the network, was measured) and answers "N+0 records in" (N MiB, no partial
# block: busybox's dd prints no byte count).
SERVER = ("mkdir -p /www && dd if=/dev/zero of=/www/big bs=1048576 count={mb} 2>/dev/null && "
          "printf '%s' '{page}' > /www/small && printf '#!/bin/sh\\nexec dd of=/dev/null "
          "bs=1048576 iflag=fullblock 2>&1\\n' > /count && chmod +x /count && "
          "httpd -p 80 -h /www && exec nc -ll -p 81 -e /count")
BUFFER = 1 << 20


class Engine(DockerCli):
    """The docker CLI against one engine, and its server container's published ports."""

    timeout = 300

    def __init__(self, name: str, host: str, config_dir: Path) -> None:
        super().__init__(name, host, config_dir)
        self.http_port = self.sink_port = 0

    def start_server(self, mb: int) -> None:
        self.run("pull", "-q", IMAGE)
        self.http_port, self.sink_port = free_port(), free_port()
        script = SERVER.format(mb=mb, page=SMALL_PAGE.decode().strip())
        self.run("run", "-d", "--name", f"bench-net-{os.getpid()}",
                 "-p", f"{self.http_port}:80", "-p", f"{self.sink_port}:81",
                 IMAGE, "sh", "-c", script)
        deadline = time.monotonic() + 60
        while True:
            try:
                if get_small("127.0.0.1", self.http_port):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the server container did not answer on "
                                   f"127.0.0.1:{self.http_port}")
            time.sleep(0.2)

    def clean(self) -> None:
        ids = self.run("ps", "-aq").split()
        if ids:
            self.run("rm", "-f", *ids)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def host_address() -> str | None:
    """The host's own address: the source of its default route (else its first global one)."""
    out = subprocess.run(["ip", "-4", "-o", "route", "get", "192.0.2.250"], capture_output=True,
                         text=True, check=False).stdout.split()
    if "src" in out:
        return out[out.index("src") + 1]
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                           capture_output=True, text=True, check=False).stdout.split()
    return addrs[addrs.index("inet") + 1].split("/")[0] if "inet" in addrs else None


def get_small(address: str, port: int) -> bool:
    """One short GET on a new connection; whether it got the page."""
    with socket.create_connection((address, port), timeout=30) as sock:
        sock.sendall(b"GET /small HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    return answer.startswith(b"HTTP/1.") and b" 200 " in answer[:16] and \
        answer.endswith(SMALL_PAGE.strip())


def download(address: str, port: int, size: int) -> float:
    """MB/s of one GET of the big file, request sent to last byte received."""
    buffer = bytearray(BUFFER)
    received = 0
    with socket.create_connection((address, port), timeout=60) as sock:
        started = time.perf_counter()
        sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
        while n := sock.recv_into(buffer):
            received += n
        took = time.perf_counter() - started
    if received < size:
        raise RuntimeError(f"download from {address}:{port}: {received} of {size} bytes")
    return size / took / 1e6


def upload(address: str, port: int, source: Path, size: int) -> float:
    """MB/s of --mb MiB into the container's nc, first byte sent to its count received."""
    with socket.create_connection((address, port), timeout=60) as sock, \
            source.open("rb") as data:
        started = time.perf_counter()
        sock.sendfile(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(100):
            answer += chunk
        took = time.perf_counter() - started
    if not answer.startswith(f"{size >> 20}+0 records in".encode()):
        raise RuntimeError(f"upload to {address}:{port}: the container counted {answer!r}, "
                           f"not {size}")
    return size / took / 1e6


def connections(address: str, port: int, threads: int, seconds: float) -> float:
    """Completed short GETs per second, ``threads`` clients for ``seconds``. Raises if any
    failed (a refused or reset connection is a bug to see, not a number to average)."""
    done = [0] * threads
    errors: list[BaseException] = []
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        try:
            while time.perf_counter() < stop_at:
                if not get_small(address, port):
                    raise RuntimeError("wrong answer")
                done[index] += 1
        except BaseException as e:
            errors.append(e)

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    took = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"conn/s to {address}:{port}: {errors[0]!r} "
                           f"({len(errors)} clients failed)")
    return sum(done) / took


Times = dict[str, dict[str, dict[str, list[float]]]]   # engine -> address -> metric -> values


def measure(engines: list[Engine], addresses: list[str], args: argparse.Namespace,
            source: Path, log: Callable[[str], None]) -> Times:
    size = args.mb << 20
    values: Times = {e.name: {a: {m: [] for m in METRICS} for a in addresses} for e in engines}
    for round_no in range(args.runs + 1):
        order = engines if round_no % 2 == 0 else engines[::-1]
        for address in addresses:
            for engine in order:
                got = {
                    "download": download(address, engine.http_port, size),
                    "upload": upload(address, engine.sink_port, source, size),
                    "conn/s": connections(address, engine.http_port, args.threads,
                                          args.seconds),
                }
                if round_no == 0:
                    continue  # warm-up
                for metric, value in got.items():
                    values[engine.name][address][metric].append(value)
                log(f"round {round_no} {engine.name:7} {address:15} " + ", ".join(
                    f"{m} {v:.0f}" for m, v in got.items()))
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", type=int, default=200, help="MiB per download and upload")
    parser.add_argument("--seconds", type=float, default=2.0, help="per conn/s measurement")
    parser.add_argument("--threads", type=int, default=4, help="conn/s client threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log: Callable[[str], None] = (lambda _: None) if args.json else print
    addresses = ["127.0.0.1"]
    own = host_address()
    if own:
        addresses.append(own)
    work = Path(tempfile.mkdtemp(prefix="pd-bench-net-", dir="/tmp"))
    # pydeskd's roots get a short path of their own: a shim's socket path must fit in sun_path.
    pd_root = Path(tempfile.mkdtemp(prefix="pdb-", dir="/tmp"))
    try:
        source = work / "upload.bin"
        with source.open("wb") as f:
            f.truncate(args.mb << 20)  # zeros, read from the page cache at every upload
        build_single(work / "layout")
        with Registry(work / "registry") as registry:
            registry.push_layout(work / "layout", "library/busybox:latest")
            with Pydeskd(pd_root, config={"registry-mirrors": [registry.url]}) as pd, \
                    DockerEngine(mirrors=[registry.url], network=True) as engine:
                engines = [Engine("pydeskd", pd.host, work / "cfg-pydeskd"),
                           Engine("docker", engine.host, work / "cfg-docker")]
                try:
                    for e in engines:
                        e.start_server(args.mb)
                    values = measure(engines, addresses, args, source, log)
                finally:
                    for e in engines:
                        e.clean()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pd_root, ignore_errors=True)
    medians = {name: {a: {m: statistics.median(v) for m, v in per.items()}
                      for a, per in by_address.items()}
               for name, by_address in values.items()}
    ratios = {a: {m: medians["pydeskd"][a][m] / medians["docker"][a][m] for m in METRICS}
              for a in addresses}
    result = {"runs": args.runs, "mb": args.mb, "seconds": args.seconds,
              "threads": args.threads, "median": medians, "ratio": ratios,
              "machine": platform.node(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
              "date": time.strftime("%Y-%m-%d %H:%M")}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for address in addresses:
            for metric in METRICS:
                unit = "" if metric == "conn/s" else " MB/s"
                print(f"{address:15} {metric:8} median: pydeskd "
                      f"{medians['pydeskd'][address][metric]:.0f}{unit}, docker "
                      f"{medians['docker'][address][metric]:.0f}{unit}; ratio "
                      f"{ratios[address][metric]:.2f} (target >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
