"""Benchmark: the ``pydesk`` CLI's start-up against the docker CLI's, command by command.

    .venv/bin/python bench/cli_startup.py [--runs 15] [--docker PATH] [--json]

Each case is one pydesk command and the same docker command, run against a socket nothing
listens on (``-H unix:///nonexistent...``), so that what is timed is the CLI alone: parsing,
imports, building the request, and its failure to connect (no engine's work in either). The two
CLIs take turns run by run after one untimed warm-up each, so a shared machine's noise hits both
alike. Per run: wall time, and CPU time (user + system of the process and its threads, from
``wait4``: other processes on the shared cores barely change it). For pydesk's engine commands
also the CPU time it has used when it makes its first API request (its first socket connect,
docker-py's included): the CLI's own start-up, the 150 ms budget of docs/cli.md. Prints the
medians, and the ratio pydesk / docker of each.

It must never contact an engine: every command gets the nonexistent socket.
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
import time
from dataclasses import dataclass, field
from pathlib import Path

PYDESK = Path(sys.executable).with_name("pydesk")
NOWHERE = "unix:///nonexistent-pydesk-bench.sock"
BUDGET_MS = 150.0

# (label, argv after the program name; the same for both CLIs, and whether it asks the engine)
CASES: tuple[tuple[str, list[str], bool], ...] = (
    ("--help", ["--help"], False),
    ("run --help", ["run", "--help"], False),
    ("ps", ["-H", NOWHERE, "ps"], True),
    ("stop x", ["-H", NOWHERE, "stop", "x"], True),
    ("run -d -p 8080:80 busybox", ["-H", NOWHERE, "run", "-d", "-p", "8080:80", "busybox"],
     True),
    ("logs x", ["-H", NOWHERE, "logs", "x"], True),
    ("volume ls", ["-H", NOWHERE, "volume", "ls"], True),
)

# Runs pydesk and stops it at its first socket connect; prints the CPU time used by then.
FIRST_REQUEST = """
import os, socket, sys, time

def first_request(self, address):
    os.write(2, f"CPU-AT-FIRST-REQUEST {time.process_time()!r}\\n".encode())
    os._exit(0)

socket.socket.connect = first_request
sys.argv = ["pydesk", *sys.argv[1:]]
from pydesk.cli.main import main
main()
"""


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    first_request: list[float] = field(default_factory=list)


def clean_env() -> dict[str, str]:
    """The caller's environment without what would pick another engine for either CLI."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYDESK_", "DOCKER_HOST", "DOCKER_CONTEXT"))}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``argv``; its exit code does not matter (no engine)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = 0  # reaped by wait4
    return wall, usage.ru_utime + usage.ru_stime


def cpu_at_first_request(argv: list[str], env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-c", FIRST_REQUEST, *argv], capture_output=True,
                          text=True, timeout=60, check=False, env=env)
    if "CPU-AT-FIRST-REQUEST" not in done.stderr:
        raise RuntimeError(f"pydesk {' '.join(argv)} made no request:\n{done.stderr}")
    return float(done.stderr.rpartition("CPU-AT-FIRST-REQUEST ")[2].split()[0])


def measure(docker: str, runs: int) -> dict[str, dict[str, Samples]]:
    env = clean_env()
    results: dict[str, dict[str, Samples]] = {}
    for label, argv, asks_engine in CASES:
        clis = {"pydesk": [str(PYDESK), *argv], "docker": [docker, *argv]}
        samples = {name: Samples() for name in clis}
        for program in clis.values():  # warm-up: page cache, pyc files
            timed(program, env)
        for _ in range(runs):
            for name, program in clis.items():
                wall, cpu = timed(program, env)
                samples[name].wall.append(wall)
                samples[name].cpu.append(cpu)
            if asks_engine:
                samples["pydesk"].first_request.append(cpu_at_first_request(argv, env))
        results[label] = samples
    return results


def ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 1) if values else None


def summary(results: dict[str, dict[str, Samples]]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for label, samples in results.items():
        p, d = samples["pydesk"], samples["docker"]
        own = ms(p.first_request) if p.first_request else ms(p.cpu)
        rows.append({
            "command": label,
            "pydesk_wall_ms": ms(p.wall), "docker_wall_ms": ms(d.wall),
            "wall_ratio": round(statistics.median(p.wall) / statistics.median(d.wall), 2),
            "pydesk_cpu_ms": ms(p.cpu), "docker_cpu_ms": ms(d.cpu),
            "cpu_ratio": round(statistics.median(p.cpu) / statistics.median(d.cpu), 2),
            "pydesk_cpu_at_first_request_ms": ms(p.first_request),
            "pydesk_best_cpu_ms": round(min(p.cpu) * 1000, 1),
            "within_budget": own is not None and own < BUDGET_MS,
        })
    return rows


def machine() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} CPUs, {platform.platform()}, load {load:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--docker", default=shutil.which("docker"),
                        help="the docker CLI (default: on PATH)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.docker:
        print("no docker CLI: pass --docker PATH", file=sys.stderr)
        return 2
    version = subprocess.run([args.docker, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    rows = summary(measure(args.docker, args.runs))
    if args.json:
        print(json.dumps({"machine": machine(), "docker": version, "runs": args.runs,
                          "budget_ms": BUDGET_MS, "results": rows}, indent=2))
        return 0
    print(f"{machine()}; {version}; {args.runs} runs each, medians (ms)")
    print(f"{'command':28} {'wall pydesk':>11} {'docker':>7} {'ratio':>6} "
          f"{'CPU pydesk':>10} {'docker':>7} {'ratio':>6} {'CPU at 1st request':>18}")
    for r in rows:
        first = r["pydesk_cpu_at_first_request_ms"]
        print(f"{r['command']:28} {r['pydesk_wall_ms']:>11} {r['docker_wall_ms']:>7} "
              f"{r['wall_ratio']:>5}x {r['pydesk_cpu_ms']:>10} {r['docker_cpu_ms']:>7} "
              f"{r['cpu_ratio']:>5}x {first if first is not None else '-':>18}")
    verdict = all(r["within_budget"] for r in rows)
    print(f"pydesk's own start-up (CPU until the first API request, or of the whole command "
          f"without one) under {BUDGET_MS:.0f} ms in every case: {'yes' if verdict else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
