"""The accelerator probe: which of KVM, HVF, WHPX really runs a guest here, decided with a timeout.

What it is for: :func:`choose_accelerator` turns ``--accel auto|kvm|hvf|whpx|tcg`` into an
:class:`Accel` and a reason the user can read. A hardware accelerator is used only after a probe
boots the guest kernel under it, with the same CPU model the VM will use (``-cpu host``), and
sees the kernel print ``Linux version`` on the serial port within ``timeout`` seconds.
Measured on these machines: /dev/kvm opens and a real-mode payload runs, but the kernel hangs
once it leaves real mode with ``-cpu qemu64``, and QEMU aborts ("failed to set MSR 0x10a") with
``-cpu host``; so a real-mode probe (``-bios`` + isa-debug-exit) or ``query-kvm`` would both
lie. The verdict is cached per host boot (boot id) so later starts do not pay the probe.
What it must never do: return a hardware accelerator that was not probed in this boot, or let a
probe's QEMU outlive the probe.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pydesk.vm.config import Accel, Arch, HostInfo, HostOS
from pydesk.vm.errors import InvalidArgument, VmError
from pydesk.vm.qemu import SERIAL_CONSOLE

DEFAULT_TIMEOUT = 3.0
PROGRESS_MARK = b"Linux version"
"""The kernel's first line: printed from 64-bit C code, after the mode switches that hang here."""
CHOICES = ("auto", "kvm", "hvf", "whpx", "tcg")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str
    seconds: float


@dataclass(frozen=True)
class Verdict:
    """The accelerator chosen, and why (shown by ``pydesk vm start``)."""

    accel: Accel
    reason: str
    cached: bool = False


Prober = Callable[[Accel, HostInfo, Path, float], ProbeResult]
"""The seam: boots ``kernel`` under an accelerator, says whether it made progress in time."""


def hardware_candidate(host: HostInfo,
                       dev_kvm: Path = Path("/dev/kvm")) -> tuple[Accel | None, str]:
    """The hardware accelerator this host OS offers, if its device or switch says it can work."""
    if host.os is HostOS.LINUX:
        try:
            fd = os.open(dev_kvm, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, f"{dev_kvm} does not exist (no KVM: kvm module not loaded, or nested " \
                         "virtualization off)"
        except PermissionError:
            return None, f"{dev_kvm} is not accessible to this user (add it to the kvm group)"
        except OSError as e:
            return None, f"{dev_kvm} cannot be opened: {e.strerror}"
        os.close(fd)
        return Accel.KVM, f"{dev_kvm} is present"
    if host.os is HostOS.MACOS:
        try:
            out = subprocess.run(["sysctl", "-n", "kern.hv_support"], capture_output=True,
                                 timeout=5, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = b""
        if out == b"1":
            return Accel.HVF, "Hypervisor.framework is supported (kern.hv_support=1)"
        return None, "Hypervisor.framework is not supported (kern.hv_support != 1)"
    # Windows: whether the Windows Hypervisor Platform feature is on is only known by trying it.
    return Accel.WHPX, "Windows: trying the Windows Hypervisor Platform"


def probe_argv(accel: Accel, host: HostInfo, kernel: Path, cpu: str = "host") -> list[str]:
    """QEMU booting ``kernel`` alone (no disk, no network) under ``accel``, console on stdout.

    ``cpu`` is the VM's own model (host) by default: another model can pass where host fails.
    """
    machine = "q35" if host.arch is Arch.X86_64 else "virt"
    console = SERIAL_CONSOLE[host.arch]
    argv = [host.qemu_binary]
    for directory in host.firmware_dirs:
        argv += ["-L", directory]
    return [*argv, "-machine", machine, "-accel", accel.value, "-cpu", cpu, "-m", "256M",
                   "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                   "-kernel", str(kernel), "-append", f"console={console} panic=-1",
                   "-serial", "stdio"]


def run_probe(accel: Accel, host: HostInfo, kernel: Path, timeout: float, *,
              cpu: str = "host") -> ProbeResult:
    """Boots ``kernel`` under ``accel``; ok when the kernel prints within ``timeout`` seconds.

    The QEMU is always killed and reaped before this returns. Threads read its pipes (portable:
    no select() on pipes on Windows).
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(probe_argv(accel, host, kernel, cpu), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        return ProbeResult(False, f"QEMU could not start: {e}", 0.0)
    done = threading.Event()  # set when the mark is seen or the console ends (QEMU exited)
    marked = threading.Event()
    stderr: list[bytes] = []

    def read_console() -> None:
        assert proc.stdout is not None
        buffer = b""
        while chunk := os.read(proc.stdout.fileno(), 4096):
            buffer = (buffer + chunk)[-4096:]
            if PROGRESS_MARK in buffer:
                marked.set()
                break
        done.set()

    def read_errors() -> None:
        assert proc.stderr is not None
        stderr.append(proc.stderr.read())

    readers = [threading.Thread(target=read_console, daemon=True),
               threading.Thread(target=read_errors, daemon=True)]
    for reader in readers:
        reader.start()
    try:
        ended_in_time = done.wait(timeout)  # read now: killing QEMU below ends the console too
        exited_by_itself = proc.poll() is not None
    finally:
        proc.kill()
        proc.wait()
        for reader in readers:
            reader.join(2)
    seconds = time.monotonic() - started
    if marked.is_set():
        return ProbeResult(True, f"{accel} booted the kernel in {seconds:.2f}s", seconds)
    if exited_by_itself or ended_in_time:
        lines = b"".join(stderr).decode(errors="replace").strip().splitlines()
        detail = next((line for line in lines if "error" in line.lower()),
                      lines[-1] if lines else "")
        returncode = proc.returncode if exited_by_itself else None
        status = _status(returncode) if returncode is not None else "exited"
        return ProbeResult(False, f"QEMU with {accel} failed at once ({status})"
                                  + (f": {detail}" if detail else ""), seconds)
    return ProbeResult(False, f"a guest under {accel} made no progress in {timeout:g}s "
                              "(the accelerator hangs)", seconds)


def _status(returncode: int) -> str:
    return f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"


def boot_id() -> str:
    """Identifies this boot of the host: the probe's verdict is valid until the next reboot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import psutil  # type: ignore[import-untyped]  # macOS, Windows: boot time is an identity

        return f"boot-time-{int(psutil.boot_time())}"


def choose_accelerator(requested: str, host: HostInfo, kernel: Path, cache_file: Path, *,
                       timeout: float = DEFAULT_TIMEOUT, prober: Prober = run_probe,
                       current_boot: Callable[[], str] = boot_id,
                       candidate: Callable[[HostInfo], tuple[Accel | None, str]]
                       = hardware_candidate) -> Verdict:
    """``requested`` ('auto' or an accelerator) -> the accelerator to use, and why.

    auto: the host's hardware accelerator if its probe passes, else TCG with the reason.
    An explicit hardware accelerator that fails its probe raises VmError (with a hint), rather
    than starting a VM that would hang. tcg is never probed.
    """
    if requested not in CHOICES:
        raise InvalidArgument(f"unknown accelerator {requested!r}",
                              hint=f"choose one of {', '.join(CHOICES)}")
    if requested == "tcg":
        return Verdict(Accel.TCG, "TCG requested (software emulation, slow)")
    if requested == "auto":
        accel, why = candidate(host)
        if accel is None:
            return Verdict(Accel.TCG, f"TCG (software emulation): {why}")
    else:
        accel = Accel(requested)
    result, cached = _probe_cached(accel, host, kernel, cache_file, timeout=timeout,
                                   prober=prober, current_boot=current_boot)
    if result.ok:
        return Verdict(accel, result.reason, cached)
    if requested == "auto":
        return Verdict(Accel.TCG, f"TCG (software emulation): {result.reason}", cached)
    raise VmError(f"{accel} does not work here: {result.reason}",
                  hint="use --accel auto (falls back to TCG) or --accel tcg")


def _probe_cached(accel: Accel, host: HostInfo, kernel: Path, cache_file: Path, *,
                  timeout: float, prober: Prober,
                  current_boot: Callable[[], str]) -> tuple[ProbeResult, bool]:
    key = f"{accel}|{host.qemu_binary}"
    boot = current_boot()
    entries: dict[str, dict[str, object]] = {}
    try:
        cache = json.loads(cache_file.read_text())
        if isinstance(cache, dict) and cache.get("boot_id") == boot:
            entries = dict(cache.get("verdicts", {}))
    except (OSError, ValueError):
        pass
    if key in entries:
        entry = entries[key]
        return ProbeResult(bool(entry["ok"]), f"{entry['reason']} (probed earlier in this host "
                                              "boot)", float(str(entry["seconds"]))), True
    result = prober(accel, host, kernel, timeout)
    entries[key] = asdict(result)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"boot_id": boot, "verdicts": entries}, indent=2))
    os.replace(tmp, cache_file)
    return result, False
