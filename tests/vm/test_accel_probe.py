"""The accelerator probe against this machine's real /dev/kvm, which hangs or aborts a guest.

Measured here: with ``-cpu host`` QEMU aborts at once ("failed to set MSR 0x10a"); with
``-cpu qemu64`` the kernel's real-mode setup runs and then the guest hangs. Both must end in
TCG within the probe's timeout, with the reason, and leave no QEMU behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from pydesk.vm.accel import choose_accelerator, run_probe
from pydesk.vm.config import Accel, detect_host

KERNEL = next(Path("/boot").glob("vmlinuz-*-cloud-amd64"), Path("/boot/missing-cloud-kernel"))


def qemu_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if "qemu" in p.name()}


@pytest.fixture(autouse=True)
def no_qemu_left() -> Iterator[None]:
    assert KERNEL.exists(), "apt install linux-image-cloud-amd64"
    yield
    assert qemu_children() == set()


def test_auto_falls_back_to_tcg_within_timeout(tmp_path: Path) -> None:
    assert Path("/dev/kvm").exists()
    started = time.monotonic()
    verdict = choose_accelerator("auto", detect_host(), KERNEL, tmp_path / "accel.json",
                                 timeout=3.0)
    took = time.monotonic() - started
    assert verdict.accel is Accel.TCG
    assert "kvm" in verdict.reason and verdict.reason.startswith("TCG")
    assert took < 3.0 + 2.0, f"the probe took {took:.1f}s"
    # the verdict is cached for this boot: the next start pays nothing
    started = time.monotonic()
    again = choose_accelerator("auto", detect_host(), KERNEL, tmp_path / "accel.json")
    assert again.cached and again.accel is Accel.TCG and time.monotonic() - started < 0.5


def test_hanging_guest_is_killed_at_the_timeout() -> None:
    # -cpu qemu64 gets past QEMU's MSR setup here and then hangs in the guest: the real hang.
    result = run_probe(Accel.KVM, detect_host(), KERNEL, 2.0, cpu="qemu64")
    assert not result.ok
    assert "made no progress in 2s" in result.reason
    assert 2.0 <= result.seconds < 4.0


def test_tcg_probe_sees_the_kernel_boot() -> None:
    # The positive path of the same probe (TCG cannot use -cpu host, so max).
    result = run_probe(Accel.TCG, detect_host(), KERNEL, 20.0, cpu="max")
    assert result.ok, result.reason
