"""Benchmark: bind-mount sync into a booted guest — edit latency, and first sync against rsync.

    sudo .venv/bin/python bench/sync.py [--edits 200] [--files 10000] [--runs 3] [--json]

Setup: the guest image (``pydesk.vm.image.ensure_image``), a private PYDESK_HOME under /tmp, one
instance (2 CPUs, 2 GiB, 4 GiB data disk), one SSH connection (paramiko, the agent's kind)
shared by everything measured.

- ``latency``: a host write -> the new content readable in the guest copy. A watcher in the
  guest (inotify on the copy's directory, over its own exec channel) prints the file each time
  it changes; the time is taken on the host from just before the write to the arrival of that
  line, so it includes the way back over SSH (an upper bound of the one-way latency). N edits,
  20-40 ms apart, p50/p95. Target: p95 <= 200 ms.
- ``first sync``: a fresh tree of N small files (100 dirs, 20 B-4 KiB, like a source tree) to a
  new guest copy: ``SyncManager.guest_path`` from the call to its return (guest process start,
  manifest, transfers, barrier). Reference: ``rsync -a`` of the same tree to a new guest
  directory over the same kind of channel (rsync's ``-e`` is this script's ``--relay``, which
  runs ``rsync --server`` through a paramiko exec channel); its SSH handshake, timed alone, is
  subtracted (ours reuses the agent's connection). Target: <= 1.5x rsync. Median of runs.
Leaves nothing behind (agent, QEMU, home).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
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

from pydesk.sync.manager import GUEST_PYTHON, SyncManager  # noqa: E402
from pydesk.sync.transport import ssh_factory  # noqa: E402
from pydesk.vm import lifecycle  # noqa: E402
from pydesk.vm.instance import ensure_keys, instance_files  # noqa: E402
from tests.vm.vmdriver import bench_image  # noqa: E402

NAME = "bench-sync"
WATCHER = r"""
import os, select, sys
from pydeskd.syncd.inotify import Inotify
root, name = sys.argv[1], sys.argv[2]
ino = Inotify(root, lambda rel, is_dir: False)
ino.watch_tree()
last = None
def check():
    global last
    try:
        data = open(os.path.join(root, name), "rb").read()
    except OSError:
        return
    if data != last:
        last = data
        os.write(1, data.strip() + b"\n")
check()
while True:
    select.select([ino.fd], [], [])
    ino.read()
    check()
"""


def relay(argv: list[str]) -> int:
    """rsync's remote shell: ``--relay HOME [-l user] host command...`` through paramiko."""
    home = argv[0]
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] == "-l" else rest[1:]
    command = " ".join(rest[1:])
    os.environ["PYDESK_HOME"] = home
    chan_holder = lifecycle.connect(NAME)
    chan = chan_holder.transport.open_session()
    chan.exec_command(command)

    def pump_in() -> None:
        while data := os.read(0, 65536):
            chan.sendall(data)
        chan.shutdown_write()

    threading.Thread(target=pump_in, daemon=True).start()
    while True:
        data = chan.recv(65536)
        if not data:
            break
        os.write(1, data)
    while chan.recv_stderr_ready():
        os.write(2, chan.recv_stderr(65536))
    status = chan.recv_exit_status()
    chan_holder.close()
    return int(status)


def make_tree(root: Path, files: int) -> None:
    rng = random.Random(7)
    for i in range(files):
        d = root / f"pkg{i % 100:02d}" / f"mod{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}.py").write_bytes(rng.randbytes(rng.randint(20, 4096)))


def first_sync(chan: Any, tree: Path, base: str, state: Path) -> float:
    manager = SyncManager(ssh_factory(lambda: chan.transport), state, guest_base=base)
    try:
        began = time.monotonic()
        manager.guest_path(str(tree))
        return time.monotonic() - began
    finally:
        manager.close()


def rsync_once(home: Path, tree: Path, target: str) -> float:
    rsh = f"{sys.executable} {Path(__file__).resolve()} --relay {home}"
    began = time.monotonic()
    subprocess.run(["rsync", "-a", "-e", rsh, f"{tree}/", f"guest:{target}/"], check=True)
    return time.monotonic() - began


def handshake(home: Path) -> float:
    began = time.monotonic()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--relay", str(home),
                    "guest", "true"], check=True)
    return time.monotonic() - began


def latency(chan: Any, tree: Path, edits: int) -> list[float]:
    manager = SyncManager(ssh_factory(lambda: chan.transport), tree.parent / "lat-state",
                          guest_base="/var/lib/pydesk/bench-sync-latency")
    target = tree / "edited.txt"
    tree.mkdir(parents=True, exist_ok=True)
    target.write_text("edit -1\n")
    try:
        guest = manager.guest_path(str(tree))
        watch = chan.transport.open_session()
        watch.exec_command(f"{GUEST_PYTHON} -c '{WATCHER}' {guest} edited.txt")
        lines: queue.Queue[tuple[str, float]] = queue.Queue()

        def read() -> None:
            buf = b""
            while data := watch.recv(4096):
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    lines.put((line.decode(), time.monotonic()))

        threading.Thread(target=read, daemon=True).start()
        first, _ = lines.get(timeout=30)
        assert first == "edit -1", first
        out = []
        for i in range(edits):
            began = time.monotonic()
            target.write_text(f"edit {i}\n")
            while True:
                line, at = lines.get(timeout=10)
                if line == f"edit {i}":
                    break
            out.append(at - began)
            time.sleep(random.uniform(0.02, 0.04))
        watch.close()
        return out
    finally:
        manager.close()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--relay":
        return relay(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="pydesk-bench-sync-"))
    private = bench_image(home)
    os.environ["PYDESK_HOME"] = str(home)
    os.environ[lifecycle.IMAGE_DIR_ENV] = str(private)
    work = home / "work"
    tree = work / "tree"
    make_tree(tree, args.files)
    ours: list[float] = []
    theirs: list[float] = []
    shakes: list[float] = []
    try:
        lifecycle.start(lifecycle.StartOptions(name=NAME, cpus=2, memory_mib=2048, disk_gib=4))
        accel = lifecycle.status(NAME).accel
        ensure_keys(instance_files(NAME))
        with lifecycle.connect(NAME) as chan:
            for run in range(args.runs):
                ours.append(first_sync(chan, tree, f"/var/lib/pydesk/bench-sync-{run}",
                                       work / f"state-{run}"))
                shakes.append(handshake(home))
                theirs.append(rsync_once(home, tree, f"/var/lib/pydesk/bench-rsync-{run}"))
                print(f"run {run + 1}: pydesk sync {ours[-1]:.2f}s, rsync -a {theirs[-1]:.2f}s "
                      f"(of which SSH handshake {shakes[-1]:.2f}s)", file=sys.stderr)
            lat = latency(chan, work / "lat", args.edits) if args.edits else [0.0]
            chan.exec("rm -rf /var/lib/pydesk/bench-sync-* /var/lib/pydesk/bench-rsync-*",
                      timeout=300)
    finally:
        try:
            lifecycle.remove(NAME, force=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    cuts = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    rsync_net = statistics.median(t - s for t, s in zip(theirs, shakes, strict=True))
    summary = {
        "accel": accel, "files": args.files, "runs": args.runs, "edits": args.edits,
        "first_sync_median_s": statistics.median(ours),
        "rsync_median_s": statistics.median(theirs),
        "rsync_without_handshake_median_s": rsync_net,
        "ratio": statistics.median(ours) / rsync_net,
        "latency_p50_ms": cuts[49] * 1000, "latency_p95_ms": cuts[94] * 1000,
        "latency_max_ms": max(lat) * 1000,
        "machine": f"{os.cpu_count()} vCPU, {platform.machine()}, Linux {platform.release()}",
        "load": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"sync ({accel}): first sync of {args.files} files "
              f"{summary['first_sync_median_s']:.2f}s vs rsync -a "
              f"{summary['rsync_median_s']:.2f}s ({rsync_net:.2f}s without its "
              f"handshake): {summary['ratio']:.2f}x; edit latency over {args.edits} edits "
              f"p50 {summary['latency_p50_ms']:.0f} ms, p95 {summary['latency_p95_ms']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
