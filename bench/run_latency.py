"""Benchmark: the latency of everyday docker CLI commands, pydeskd against the Docker Engine.

    sudo .venv/bin/python bench/run_latency.py [--runs 30] [--containers 50] [--json]

Setup: busybox (the test image of tests/support/images.py) is pushed to Debian's
`docker-registry` on 127.0.0.1 as `library/busybox:latest`; a real `pydeskd` (the console
script, as users start it) and a private Debian dockerd (its own roots, with its default bridge
and iptables, as pydeskd has its own: every container gets a network namespace, a veth on the
bridge and an address on both) both have that registry as their **registry mirror** and
`docker pull busybox` through it, so they run the same image. Then, with the official docker
CLI against each:

- `run`:  `docker run --rm busybox true`
- `ps`:   `docker ps` with N (50) running containers
- `exec`: `docker exec C true` in one of them

Each round times every command once on each engine; the engines take turns (the order flips
every round, so that neither always runs on a warm cache), after two untimed warm-up rounds.
Prints the median per command and engine and the ratio pydeskd / Docker (target: <= 1.0).
Needs root. Leaves nothing behind: containers, both daemons, the registry, every directory.
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
COMMANDS = ("run", "ps", "exec")


class Cli(DockerCli):
    """The docker CLI against one engine, with a timed run."""

    def timed(self, *args: str) -> float:
        # subprocess.run without a timeout blocks in waitpid: no polling rounds the time up.
        t0 = time.perf_counter()
        self.run(*args)
        return time.perf_counter() - t0


def commands(exec_target: str) -> dict[str, tuple[str, ...]]:
    return {"run": ("run", "--rm", IMAGE, "true"), "ps": ("ps",),
            "exec": ("exec", exec_target, "true")}


def prepare(cli: Cli, containers: int) -> str:
    """Pulls busybox and starts the containers ``docker ps`` lists; returns one for exec."""
    cli.run("pull", "-q", IMAGE)
    ids = [cli.run("run", "-d", IMAGE, "sleep", "3600").strip() for _ in range(containers)]
    return ids[0]


def clean(cli: Cli) -> None:
    ids = cli.run("ps", "-aq").split()
    if ids:
        cli.run("rm", "-f", *ids)


def measure(clis: list[Cli], targets: dict[str, str], runs: int,
            log: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {c.name: {k: [] for k in COMMANDS} for c in clis}
    for round_no in range(runs + 2):
        order = clis if round_no % 2 == 0 else clis[::-1]
        for command in COMMANDS:
            for cli in order:
                took = cli.timed(*commands(targets[cli.name])[command])
                if round_no >= 2:  # two warm-up rounds
                    times[cli.name][command].append(took)
        if round_no >= 2:
            log(f"round {round_no - 1}: " + ", ".join(
                f"{c.name} {cmd} {times[c.name][cmd][-1] * 1000:.0f} ms"
                for cmd in COMMANDS for c in clis))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log: Callable[[str], None] = (lambda _: None) if args.json else print
    work = Path(tempfile.mkdtemp(prefix="pd-bench-run-", dir="/tmp"))
    # pydeskd's roots get a short path of their own: a shim's socket path must fit in sun_path.
    pd_root = Path(tempfile.mkdtemp(prefix="pdb-", dir="/tmp"))
    try:
        build_single(work / "layout")
        with Registry(work / "registry") as registry:
            registry.push_layout(work / "layout", "library/busybox:latest")
            with Pydeskd(pd_root, config={"registry-mirrors": [registry.url]}) as pd, \
                    DockerEngine(mirrors=[registry.url], network=True) as engine:
                clis = [Cli("pydeskd", pd.host, work / "cfg-pydeskd"),
                        Cli("docker", engine.host, work / "cfg-docker")]
                try:
                    targets = {c.name: prepare(c, args.containers) for c in clis}
                    times = measure(clis, targets, args.runs, log)
                finally:
                    for cli in clis:
                        clean(cli)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pd_root, ignore_errors=True)
    medians = {name: {cmd: statistics.median(v) for cmd, v in per.items()}
               for name, per in times.items()}
    ratios = {cmd: medians["pydeskd"][cmd] / medians["docker"][cmd] for cmd in COMMANDS}
    result = {"runs": args.runs, "containers": args.containers, "median_s": medians,
              "ratio": ratios, "machine": platform.node(), "cpus": os.cpu_count(),
              "load": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M")}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for cmd in COMMANDS:
            print(f"{cmd:5} median: pydeskd {medians['pydeskd'][cmd] * 1000:.0f} ms, docker "
                  f"{medians['docker'][cmd] * 1000:.0f} ms; ratio {ratios[cmd]:.2f} "
                  f"(target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
