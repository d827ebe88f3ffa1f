"""Benchmark: how long an OCI runtime takes to create, start, wait for and delete `true`.

    .venv/bin/python bench/runtime_start.py [--runs 30] [--runtime NAME=PATH ...] [--json]

Each run, for each runtime: `create` (this process is the child subreaper, so the container's
init becomes its child once the runtime exits), `start`, waitpid on the init, `delete`. The
runtimes take turns run by run, so that noise on a shared machine hits both alike. Prints the
median of each phase and of the total per runtime, and the ratio of pydesk-runc's median total
to runc's (the target is at most 2x). Needs root. Leaves no container, cgroup or file behind.

It must never touch containers other than its own: it uses a private --root per runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as a plain script from the repository: make `tests.support` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.busybox import make_bundle
from tests.support.runtimes import (
    RUNTIMES,
    TIMEOUT,
    Runtime,
    reap_children,
    remove_cgroup,
    set_child_subreaper,
    token,
)

PHASES = ("create", "start", "wait", "delete")


@dataclass
class Timings:
    """Seconds per phase, one entry per run."""

    phases: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    totals: list[float] = field(default_factory=list)


def wait_exact(proc: subprocess.Popen[bytes]) -> None:
    """Waits for proc to exit, noticing it at once. (Popen.wait and subprocess.run with a
    timeout poll with sleeps of 1, 2, 4 ... 50 ms, which rounds every timed phase up.)"""
    pidfd = os.pidfd_open(proc.pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], TIMEOUT)
    finally:
        os.close(pidfd)
    if not ready:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{proc.args!r} did not finish within {TIMEOUT} s")
    proc.wait()


def one_run(runtime: Runtime, bundle: Path, timings: Timings) -> None:
    """create, start, wait, delete of one container; appends its timings. Raises on failure."""
    container_id = f"pydesk-bench-{token()}"
    pid_file = bundle.parent / f"{container_id}.pid"
    devnull = subprocess.DEVNULL

    def call(*args: str) -> None:
        # stderr to a file, not a pipe: the container's init inherits it and keeps it open.
        with (bundle.parent / "stderr").open("w+b") as err:
            proc = subprocess.Popen(runtime.argv(*args), stdin=devnull, stdout=devnull,
                                    stderr=err)
            wait_exact(proc)
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{runtime.name} {' '.join(args)}: exit {proc.returncode}: "
                                   f"{err.read().decode(errors='replace').strip()}")

    runtime.ids.add(container_id)
    t0 = time.perf_counter()
    call("create", "--bundle", str(bundle), "--pid-file", str(pid_file), container_id)
    t1 = time.perf_counter()
    call("start", container_id)
    t2 = time.perf_counter()
    pid = int(pid_file.read_text())
    _, status = os.waitpid(pid, 0)
    t3 = time.perf_counter()
    call("delete", container_id)
    t4 = time.perf_counter()
    runtime.ids.discard(container_id)
    pid_file.unlink()
    reap_children()  # the runtime's own helper processes, orphaned to us
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{runtime.name}: `true` exited with status {status}")
    for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
        timings.phases[phase].append(seconds)
    timings.totals.append(t4 - t0)


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "nproc": str(os.cpu_count()), "kernel": platform.release(), "cpu": cpu,
            "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per runtime first")
    parser.add_argument("--runtime", action="append", default=[], metavar="NAME=PATH",
                        help="runtimes to compare (default: runc and pydesk-runc)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (namespaces, cgroups)")
    chosen = (dict(item.split("=", 1) for item in opts.runtime) if opts.runtime
              else {name: str(path) for name, path in RUNTIMES.items()})

    set_child_subreaper()
    work = Path(tempfile.mkdtemp(prefix="pydesk-bench-"))
    runtimes: list[tuple[Runtime, Path, str]] = []
    try:
        for name, path in chosen.items():
            cgroups_path = f"/pydesk-bench-{token()}/{name}"
            bundle = work / name / "bundle"
            make_bundle(bundle, ["true"], cgroups_path)
            runtimes.append((Runtime(name, Path(path), work / name / "state"), bundle,
                             cgroups_path))
        results = {rt.name: Timings() for rt, _, _ in runtimes}
        for _ in range(opts.warmup):
            for rt, bundle, _ in runtimes:
                one_run(rt, bundle, Timings())
        for _ in range(opts.runs):
            for rt, bundle, _ in runtimes:  # interleaved: noise hits every runtime alike
                one_run(rt, bundle, results[rt.name])
    finally:
        for rt, _, cgroups_path in runtimes:
            rt.cleanup()
            reap_children()
            remove_cgroup(cgroups_path)
        shutil.rmtree(work, ignore_errors=True)

    report = summarize(results, opts.runs)
    if opts.json:
        print(json.dumps({"machine": machine(), **report}, indent=2))
    else:
        print_table(report)
    return 0


def summarize(results: dict[str, Timings], runs: int) -> dict[str, object]:
    medians = {name: {"total": statistics.median(t.totals),
                      **{p: statistics.median(v) for p, v in t.phases.items()}}
               for name, t in results.items()}
    report: dict[str, object] = {"runs": runs, "median_seconds": medians}
    if "runc" in medians and "pydesk-runc" in medians:
        report["ratio_pydesk_runc_to_runc"] = (medians["pydesk-runc"]["total"]
                                               / medians["runc"]["total"])
    return report


def print_table(report: dict[str, object]) -> None:
    medians = report["median_seconds"]
    assert isinstance(medians, dict)
    print(f"median of {report['runs']} runs, milliseconds; machine: {machine()}")
    print(f"{'runtime':<14}" + "".join(f"{p:>9}" for p in (*PHASES, "total")))
    for name, m in medians.items():
        print(f"{name:<14}" + "".join(f"{m[p] * 1000:>9.1f}" for p in (*PHASES, "total")))
    if "ratio_pydesk_runc_to_runc" in report:
        ratio = report["ratio_pydesk_runc_to_runc"]
        assert isinstance(ratio, float)
        verdict = "within" if ratio <= 2.0 else "OVER"
        print(f"ratio pydesk-runc / runc: {ratio:.2f} ({verdict} the 2x target)")


if __name__ == "__main__":
    sys.exit(main())
