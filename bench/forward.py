"""Benchmark: a published port forwarded to the host by QEMU (hostfwd), against the same port
reached directly inside the guest.

    sudo .venv/bin/python bench/forward.py [--runs 5] [--mb 64] [--json]

Setup: the guest image (``pydesk.vm.image.ensure_image``, cached), a private PYDESK_HOME under
/tmp, one VM (2 CPUs, 1 GiB), busybox (tests/support/images.py) pulled from a local registry on
the host (10.0.2.2 from the guest). One container, as bench/net.py's, with ``-p HTTP:80 -p
SINK:81``: busybox ``httpd`` serving a file of --mb MiB, and ``nc -ll -e`` into ``dd`` that
answers how many MiB it read. The port forwarder (``pydesk.forward.PortForwarder``: the SSH
channel for events, QMP for ``hostfwd_add``) makes both ports listen on the host's 127.0.0.1.

The same client (``CLIENT`` below: plain sockets, 1 MiB buffers, its own clock) runs on the host
against 127.0.0.1 (QEMU's slirp relays every byte, in QEMU's main loop) and in the guest against
the guest's own address 10.0.2.15 (pydeskd's DNAT to the container: the path slirp's relayed
connection takes, without slirp), alternating, after one untimed warm-up round:

- ``download``: one GET of the big file (MB/s, container -> client);
- ``upload``:   --mb MiB into ``nc``, until the container's count comes back (client -> container).

Prints the medians and the ratio forwarded / direct. Under TCG the guest's own client runs
emulated too: the direct figure is the guest's ceiling on this machine, not a native one. Needs
root. Leaves nothing behind: the container, the VM and its home, the registry.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "host"), str(_REPO / "guest")]

from bench.net import SERVER, SMALL_PAGE, free_port, get_small  # noqa: E402

from pydesk.forward.backend import QemuUserNetBackend  # noqa: E402
from pydesk.forward.desired import Forward, Proto  # noqa: E402
from pydesk.forward.follower import PortForwarder  # noqa: E402
from pydesk.vm import lifecycle  # noqa: E402
from pydesk.vm.channel import GuestChannel  # noqa: E402
from pydesk.vm.instance import instance_files  # noqa: E402
from pydeskd import vmcontract  # noqa: E402
from tests.support.images import build_single  # noqa: E402
from tests.support.registry import Registry  # noqa: E402
from tests.vm.vmdriver import bench_image  # noqa: E402

NAME = "bench-fwd"
GUEST_IP = vmcontract.GUEST_ADDRESS.partition("/")[0]
METRICS = ("download", "upload")

CLIENT = r"""
import json, socket, sys, time
address, http, sink, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
buffer = bytearray(1 << 20)
with socket.create_connection((address, http), timeout=120) as s:
    started = time.perf_counter()
    s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
    got = 0
    while n := s.recv_into(buffer):
        got += n
    download = time.perf_counter() - started
assert got >= size, f"download: {got} of {size} bytes"
block = bytes(1 << 20)
with socket.create_connection((address, sink), timeout=120) as s:
    started = time.perf_counter()
    for _ in range(size >> 20):
        s.sendall(block)
    s.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := s.recv(100):
        answer += chunk
    upload = time.perf_counter() - started
assert answer.startswith(b"%d+0 records in" % (size >> 20)), answer
print(json.dumps({"download": size / download / 1e6, "upload": size / upload / 1e6}))
"""


def on_host(http: int, sink: int, size: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-", "127.0.0.1", str(http), str(sink), str(size)],
                         input=CLIENT.encode(), capture_output=True, check=True, timeout=600)
    return dict(json.loads(out.stdout))


def in_guest(chan: GuestChannel, http: int, sink: int, size: int) -> dict[str, float]:
    result = chan.exec(f"python3 - {GUEST_IP} {http} {sink} {size}", stdin=CLIENT.encode(),
                       timeout=600)
    if result.status != 0:
        raise RuntimeError(f"guest client: {result.stderr.decode(errors='replace')}")
    return dict(json.loads(result.stdout))


def private_image(home: Path) -> Path:
    return bench_image(home)  # our own links: the cache may prune it while we boot it


def start_server(chan: GuestChannel, image: str, mb: int, http: int, sink: int) -> str:
    status, body = chan.request("POST", f"/images/create?fromImage={image}", b"", timeout=300)
    if status != 200 or b'"error"' in body:
        raise RuntimeError(f"pull {image}: {body[-300:]!r}")
    script = SERVER.format(mb=mb, page=SMALL_PAGE.decode().strip())
    spec = {"Image": image, "Cmd": ["sh", "-c", script],
            "ExposedPorts": {"80/tcp": {}, "81/tcp": {}},
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": str(http)}],
                                            "81/tcp": [{"HostPort": str(sink)}]}}}
    status, body = chan.request("POST", "/containers/create?name=bench-fwd",
                                json.dumps(spec).encode())
    if status != 201:
        raise RuntimeError(f"create: {body!r}")
    cid = str(json.loads(body)["Id"])
    status, body = chan.request("POST", f"/containers/{cid}/start", b"")
    if status != 204:
        raise RuntimeError(f"start: {body!r}")
    return cid


def wait_ready(backend: QemuUserNetBackend, http: int, sink: int) -> float:
    """Seconds until both forwards exist and the page answers through the host's 127.0.0.1."""
    began = time.monotonic()
    wanted = {Forward(Proto.TCP, "127.0.0.1", p, p) for p in (http, sink)}
    while True:
        try:
            if wanted <= backend.list() and get_small("127.0.0.1", http):
                return time.monotonic() - began
        except OSError:
            pass
        if time.monotonic() - began > 120:
            raise RuntimeError("the forwarded port never answered")
        time.sleep(0.2)


def measure(chan: GuestChannel, args: argparse.Namespace, http: int,
            sink: int) -> dict[str, dict[str, list[float]]]:
    size = args.mb << 20
    values: dict[str, dict[str, list[float]]] = {
        path: {m: [] for m in METRICS} for path in ("forwarded", "direct")}
    for round_no in range(args.runs + 1):
        order = ["forwarded", "direct"] if round_no % 2 == 0 else ["direct", "forwarded"]
        for path in order:
            got = on_host(http, sink, size) if path == "forwarded" else \
                in_guest(chan, http, sink, size)
            if round_no == 0:
                continue  # warm-up
            for metric in METRICS:
                values[path][metric].append(got[metric])
            print(f"round {round_no} {path:9} " + ", ".join(
                f"{m} {got[m]:.1f} MB/s" for m in METRICS), file=sys.stderr)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", type=int, default=64, help="MiB per download and upload")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="pydesk-bench-fwd-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="pd-bench-fwd-", dir="/tmp"))
    os.environ["PYDESK_HOME"] = str(home)
    os.environ[lifecycle.IMAGE_DIR_ENV] = str(private_image(home))
    stop = threading.Event()
    try:
        build_single(work / "layout")
        with Registry(work / "registry") as registry:
            registry.push_layout(work / "layout", "library/busybox:latest")
            guest_registry = "10.0.2.2:" + registry.host.rsplit(":", 1)[1]
            lifecycle.start(lifecycle.StartOptions(
                name=NAME, cpus=2, memory_mib=1024, disk_gib=4,
                daemon_json=json.dumps({"insecure-registries": [guest_registry]})))
            accel = lifecycle.status(NAME).accel
            files = instance_files(NAME)
            backend = QemuUserNetBackend(files.qmp_socket)
            http, sink = free_port(), free_port()
            with lifecycle.connect(NAME) as chan:
                forwarder = PortForwarder(chan.open_unix, backend, files.dir / "forwards.json",
                                          lambda m, e: print(f"forwarder: {m}", file=sys.stderr))
                thread = threading.Thread(target=forwarder.run, args=(stop,))
                thread.start()
                try:
                    start_server(chan, f"{guest_registry}/library/busybox:latest", args.mb,
                                 http, sink)
                    ready = wait_ready(backend, http, sink)
                    values = measure(chan, args, http, sink)
                finally:
                    stop.set()
                    thread.join(10)
            lifecycle.stop(NAME)
    finally:
        try:
            lifecycle.remove(NAME, force=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    medians = {path: {m: statistics.median(v) for m, v in per.items()}
               for path, per in values.items()}
    result: dict[str, Any] = {
        "runs": args.runs, "mb": args.mb, "accel": accel,
        "median": medians,
        "ratio": {m: medians["forwarded"][m] / medians["direct"][m] for m in METRICS},
        "range": {path: {m: [min(v), max(v)] for m, v in per.items()}
                  for path, per in values.items()},
        "server_ready_s": ready,
        "machine": f"{os.cpu_count()} vCPU, {platform.machine()}, Linux {platform.release()}",
        "load": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for m in METRICS:
            print(f"forward {m}: forwarded (host 127.0.0.1) {medians['forwarded'][m]:.1f} MB/s, "
                  f"direct (in the guest) {medians['direct'][m]:.1f} MB/s, ratio "
                  f"{result['ratio'][m]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
