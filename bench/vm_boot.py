"""Benchmark: VM boot, from QEMU's launch to the guest API answering /_ping through the channel.

    sudo .venv/bin/python bench/vm_boot.py [--runs 5] [--accel auto] [--json]

Setup: the guest image (``pydesk.vm.image.ensure_image``: built once, cached by its recipe
hash), a private PYDESK_HOME under /tmp, one instance (2 CPUs, 2 GiB, 4 GiB data disk). One
untimed warm-up boot (it makes the data disk's filesystem and saves the VM state), then N timed
cold boots (the saved state deleted before each: each boots, and saves the state again at the
guest's snapshot point, as a first start does), then N timed resumed starts (from the saved
state), each followed by a clean ``stop``. Per start it records:

- ``ready``: launch of QEMU -> /_ping answered over SSH (the agent's own clock, runtime.json);
  for a cold boot it includes saving the state (``saved``, also recorded); for a resume,
  ``load`` is the part spent loading the state;
- ``start``: the whole ``start()`` call as the CLI makes it (config, cached accelerator verdict,
  disk check, agent spawn, boot);
- ``idle memory``: ``free -m`` in the guest a second after it is ready (used / total MiB).

Reference: the image's kernel and initramfs booted by a bare QEMU (no disks, no network) until
the kernel runs the initramfs's ``/init``, under the same accelerator: the floor that no guest
userspace work can go under. Target: median ``ready`` <= 10 s under TCG (for the resumed
start: the one users meet after the first). Leaves nothing
behind (agent, QEMU, home).
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
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "host"), str(_REPO / "guest")]

from pydesk.vm import lifecycle, resume  # noqa: E402
from pydesk.vm.instance import instance_files  # noqa: E402
from pydeskd import vmcontract  # noqa: E402
from tests.vm.vmdriver import bench_image  # noqa: E402


def kernel_alone(image: Path, accel: str, timeout: float = 60) -> float:
    """Seconds from QEMU's launch until the kernel runs the initramfs's /init (then killed)."""
    from pydesk.vm.config import detect_host

    host = detect_host()
    bios = ["-bios", host.x86_bios] if host.x86_bios else []  # the VM's own firmware
    argv = [host.qemu_binary, *bios, "-machine", "q35",
            "-accel", "tcg,thread=multi" if accel == "tcg" else accel,
            "-cpu", "max" if accel == "tcg" else "host", "-smp", "2", "-m", "2048M",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(image / vmcontract.KERNEL_FILE),
            "-initrd", str(image / vmcontract.INITRD_FILE),
            "-append", "console=ttyS0 panic=-1", "-serial", "stdio"]
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    seen = b""
    try:
        while time.monotonic() - began < timeout:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen = (seen + chunk)[-8192:]
            # The kernel's last word before it hands over to the initramfs.
            if b"Run /init as init process" in seen:
                return time.monotonic() - began
    finally:
        proc.kill()
        proc.wait()
    raise RuntimeError("the kernel did not reach userspace")


def guest_memory(name: str) -> tuple[int, int]:
    with lifecycle.connect(name) as chan:
        out = chan.exec("free -m").stdout.decode()
    fields = next(line for line in out.splitlines() if line.startswith("Mem:")).split()
    return int(fields[2]), int(fields[1])  # used, total


def boot_once(options: lifecycle.StartOptions, mode: str) -> dict[str, float]:
    files = instance_files(options.name)
    if mode == "cold":
        resume.discard(files)
    began = time.monotonic()
    lifecycle.start(options)
    start_seconds = time.monotonic() - began
    runtime = json.loads(files.runtime.read_text())
    if runtime.get("start_mode") != mode:
        raise RuntimeError(f"wanted a {mode} start, got {runtime.get('start_mode')}")
    time.sleep(1)
    used, total = guest_memory(options.name)
    result = lifecycle.stop(options.name)
    if "cleanly" not in result:
        raise RuntimeError(f"stop: {result}")
    return {"ready": float(runtime["ready_seconds"]), "start": start_seconds,
            "used_mib": used, "total_mib": total,
            "saved": float(runtime.get("state_saved_seconds", 0.0)),
            "load": float(runtime.get("resume_seconds", 0.0))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--accel", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="pydesk-bench-"))
    # Our own links to the image's files: the image cache may prune it while we boot it.
    image = bench_image(home)
    os.environ["PYDESK_HOME"] = str(home)
    os.environ[lifecycle.IMAGE_DIR_ENV] = str(image)
    options = lifecycle.StartOptions(name="bench", cpus=2, memory_mib=2048, disk_gib=4,
                                     accel=args.accel)
    runs: dict[str, list[dict[str, float]]] = {"cold": [], "resumed": []}
    try:
        # warm-up: mkfs of the data disk, accelerator probe, page cache, a saved state
        boot_once(options, "cold")
        accel = lifecycle.status("bench").accel
        kernel = [kernel_alone(image, accel)]
        for mode in ("cold", "resumed"):
            for i in range(args.runs):
                runs[mode].append(boot_once(options, mode))
                if mode == "cold":
                    kernel.append(kernel_alone(image, accel))
                r = runs[mode][-1]
                print(f"{mode} {i + 1}: ready {r['ready']:.2f}s (saved {r['saved']:.2f}s, "
                      f"load {r['load']:.2f}s), start {r['start']:.2f}s, idle "
                      f"{r['used_mib']:.0f}/{r['total_mib']:.0f} MiB", file=sys.stderr)
    finally:
        try:
            lifecycle.remove("bench", force=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    cold, resumed = runs["cold"], runs["resumed"]
    summary = {
        "runs": args.runs, "accel": accel,
        "cold_ready_median_s": statistics.median(r["ready"] for r in cold),
        "cold_ready_range_s": [min(r["ready"] for r in cold), max(r["ready"] for r in cold)],
        "cold_save_median_s": statistics.median(r["saved"] for r in cold),
        "resumed_ready_median_s": statistics.median(r["ready"] for r in resumed),
        "resumed_ready_range_s": [min(r["ready"] for r in resumed),
                                  max(r["ready"] for r in resumed)],
        "resumed_load_median_s": statistics.median(r["load"] for r in resumed),
        "resumed_start_median_s": statistics.median(r["start"] for r in resumed),
        "kernel_alone_median_s": statistics.median(kernel),
        "idle_used_mib_median": statistics.median(r["used_mib"] for r in cold + resumed),
        "total_mib": cold[0]["total_mib"],
        "machine": f"{os.cpu_count()} vCPU, {platform.machine()}, Linux {platform.release()}",
        "load": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"vm_boot ({accel}, {args.runs} runs each): launch -> API ready median: resumed "
              f"{summary['resumed_ready_median_s']:.2f}s (load "
              f"{summary['resumed_load_median_s']:.2f}s; start() "
              f"{summary['resumed_start_median_s']:.2f}s), cold "
              f"{summary['cold_ready_median_s']:.2f}s (incl. saving the state "
              f"{summary['cold_save_median_s']:.2f}s); kernel alone "
              f"{summary['kernel_alone_median_s']:.2f}s; guest idle memory "
              f"{summary['idle_used_mib_median']:.0f} MiB used of {summary['total_mib']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
