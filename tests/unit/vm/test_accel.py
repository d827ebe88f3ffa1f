"""choose_accelerator: the decision and the per-boot cache, with a recording prober."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pydesk.vm.accel import ProbeResult, choose_accelerator, hardware_candidate, probe_argv
from pydesk.vm.config import Accel, Arch, HostInfo, HostOS
from pydesk.vm.errors import InvalidArgument, VmError

HOST = HostInfo(os=HostOS.LINUX, arch=Arch.X86_64, qemu_binary="qemu-system-x86_64")
KERNEL = Path("/img/vmlinuz")


class Prober:
    def __init__(self, ok: bool, reason: str = "why") -> None:
        self.ok, self.reason, self.calls = ok, reason, 0

    def __call__(self, accel: Accel, host: HostInfo, kernel: Path, timeout: float) -> ProbeResult:
        self.calls += 1
        assert kernel == KERNEL and timeout == 3.0
        return ProbeResult(self.ok, f"{accel}: {self.reason}", 0.1)


def kvm_present(host: HostInfo) -> tuple[Accel | None, str]:
    return Accel.KVM, "/dev/kvm is present"


def choose(requested: str, prober: Prober, cache: Path, boot: str = "boot-1",
           candidate: object = kvm_present) -> object:
    return choose_accelerator(requested, HOST, KERNEL, cache, prober=prober,
                              current_boot=lambda: boot, candidate=candidate)  # type: ignore[arg-type]


def test_auto_uses_kvm_when_probe_passes(tmp_path: Path) -> None:
    verdict = choose("auto", Prober(True, "booted"), tmp_path / "c.json")
    assert verdict.accel is Accel.KVM and "booted" in verdict.reason  # type: ignore[attr-defined]


def test_auto_falls_back_to_tcg_with_reason(tmp_path: Path) -> None:
    verdict = choose("auto", Prober(False, "no progress in 3s"), tmp_path / "c.json")
    assert verdict.accel is Accel.TCG  # type: ignore[attr-defined]
    assert "no progress in 3s" in verdict.reason  # type: ignore[attr-defined]


def test_no_candidate_means_tcg_without_probe(tmp_path: Path) -> None:
    prober = Prober(True)
    verdict = choose("auto", prober, tmp_path / "c.json",
                     candidate=lambda h: (None, "/dev/kvm does not exist"))
    assert verdict.accel is Accel.TCG and prober.calls == 0  # type: ignore[attr-defined]
    assert "/dev/kvm does not exist" in verdict.reason  # type: ignore[attr-defined]


def test_tcg_is_never_probed(tmp_path: Path) -> None:
    prober = Prober(False)
    assert choose("tcg", prober, tmp_path / "c.json").accel is Accel.TCG  # type: ignore[attr-defined]
    assert prober.calls == 0


def test_explicit_hardware_accel_that_fails_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(VmError, match="kvm does not work here") as info:
        choose("kvm", Prober(False), tmp_path / "c.json")
    assert "--accel tcg" in info.value.hint


def test_unknown_accel(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        choose("xen", Prober(True), tmp_path / "c.json")


def test_verdict_cached_for_this_boot_only(tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    prober = Prober(False)
    choose("auto", prober, cache)
    again = choose("auto", prober, cache)
    assert prober.calls == 1 and again.cached  # type: ignore[attr-defined]
    assert again.accel is Accel.TCG  # type: ignore[attr-defined]
    assert json.loads(cache.read_text())["boot_id"] == "boot-1"
    choose("auto", prober, cache, boot="boot-2")
    assert prober.calls == 2


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    cache.write_text("{not json")
    prober = Prober(True)
    assert choose("auto", prober, cache).accel is Accel.KVM  # type: ignore[attr-defined]
    assert prober.calls == 1


def test_dev_kvm_checks(tmp_path: Path) -> None:
    accel, why = hardware_candidate(HOST, tmp_path / "kvm")
    assert accel is None and "does not exist" in why
    (tmp_path / "kvm").write_text("")
    assert hardware_candidate(HOST, tmp_path / "kvm")[0] is Accel.KVM
    assert hardware_candidate(
        HostInfo(os=HostOS.WINDOWS, arch=Arch.X86_64, qemu_binary="q.exe"))[0] is Accel.WHPX


def test_probe_argv_boots_the_kernel_alone() -> None:
    args = probe_argv(Accel.KVM, HOST, KERNEL)
    assert args[args.index("-accel") + 1] == "kvm"
    assert args[args.index("-cpu") + 1] == "host"
    assert args[args.index("-kernel") + 1] == str(KERNEL)
    assert "-drive" not in args and "-netdev" not in args and "-nodefaults" in args
    assert args[args.index("-serial") + 1] == "stdio"
