"""Benchmark: pull of a 5-layer, ~100 MB image from a local registry, pydesk against Docker.

    sudo .venv/bin/python bench/pull.py [--runs 5] [--layers 5] [--mb 100] [--json]

Setup: the image (busybox plus N layers of incompressible data, gzip) is built as an OCI layout
and pushed to Debian's `docker-registry` on 127.0.0.1 as `bench/big:latest`. Both candidates pull
`bench/big` (that is `docker.io/bench/big:latest`) through that registry configured as a
**registry mirror**, so both take the Docker Hub code path:

- Docker: a private Debian dockerd (its own data root, no network changes) with
  `"registry-mirrors": ["http://127.0.0.1:PORT"]`; timed: `docker pull bench/big`; between runs
  `docker rmi` removes the image and its layers.
- pydesk: `containerd.pull.pull()` in this process (the daemon will call the same function) with
  `RegistryHosts(mirrors=...)`, into a fresh store each run: download, verify, unpack into
  overlay snapshots, record.

The candidates take turns run by run (after one untimed warm-up each); the script prints each
run, the medians and the ratio pydesk / Docker (target: <= 1.0). Needs root (overlay, dockerd).
Leaves nothing behind: the registry, dockerd, its containerd and every directory are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a plain script from the repository: make `tests.support` and the sources importable.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "guest")]

from pydeskd.containerd.pull import pull  # noqa: E402
from pydeskd.containerd.registry import RegistryClient, RegistryHosts  # noqa: E402
from pydeskd.containerd.stores import Stores  # noqa: E402
from tests.support.docker_engine import DockerEngine  # noqa: E402
from tests.support.images import build_big  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

IMAGE = "bench/big"


def pull_pydesk(mirror: str, root: Path) -> float:
    stores = Stores.open(root)
    try:
        client = RegistryClient(RegistryHosts(mirrors=(mirror,)))
        started = time.perf_counter()
        result = pull(stores, client, IMAGE)
        elapsed = time.perf_counter() - started
        assert result.downloaded and result.chain_id
        return elapsed
    finally:
        stores.close()
        shutil.rmtree(root)


def pull_docker(engine: DockerEngine) -> float:
    started = time.perf_counter()
    engine.docker("pull", "-q", IMAGE)
    elapsed = time.perf_counter() - started
    engine.docker("rmi", IMAGE)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/pull: needs root (overlay mounts, dockerd)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pydesk-bench-pull-"))
    times: dict[str, list[float]] = {"pydesk": [], "docker": []}
    try:
        build_big(work / "layout", n_layers=args.layers, total_mb=args.mb)
        with Registry(work / "registry") as registry:
            registry.push_layout(work / "layout", f"{IMAGE}:latest")
            with DockerEngine(mirrors=[registry.url]) as engine:
                for run in range(args.runs + 1):
                    mine = pull_pydesk(registry.url, work / f"store-{run}")
                    theirs = pull_docker(engine)
                    if run == 0:
                        continue  # warm-up: page cache, connections, imports
                    times["pydesk"].append(mine)
                    times["docker"].append(theirs)
                    if not args.json:
                        print(f"run {run}: pydesk {mine:.2f} s   docker {theirs:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["pydesk"] / medians["docker"]
    result = {"runs": args.runs, "layers": args.layers, "mb": args.mb,
              "median_s": medians, "ratio": ratio, "machine": platform.node(),
              "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"median: pydesk {medians['pydesk']:.2f} s, docker {medians['docker']:.2f} s; "
              f"ratio pydesk/docker = {ratio:.2f} (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
