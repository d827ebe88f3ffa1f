"""``pydesk doctor``'s checks over fake probes: which sections apply to the engine selection,
each verdict and its fix, failures of the probes themselves, forwards.json, the exit rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pydesk.cli.doctor_checks import (
    AccelState,
    Check,
    ContextState,
    Probes,
    Verdict,
    VmState,
    accel_check,
    healthy,
    read_forwards,
    run_checks,
)
from pydesk.endpoint import NATIVE_SOCKET, Selection, explain_engine
from pydesk.vm.errors import NotFound

HOME = Path("/home/u")
VM_SOCK = HOME / ".pydesk" / "run" / "docker.sock"


def selection(answering: set[Path], platform: str = "linux", **kw: Any) -> Selection:
    args: dict[str, Any] = {"host": None, "mode": None, "env": {}, "config": {}}
    args.update(kw)
    return explain_engine(ping=lambda p: p in answering, home=HOME, platform=platform, **args)


def probes(answering: set[Path], **kw: Any) -> Probes:
    platform = kw.pop("platform", "linux")
    mode = kw.pop("mode", None)
    base = Probes(
        selection=lambda: selection(answering, platform, mode=mode),
        ping=lambda p: p in answering,
        engine_version=lambda p: "pydeskd 0.1.0 (API 1.47, linux/amd64)",
        qemu=lambda: ("/usr/bin/qemu-system-x86_64", "QEMU emulator version 7.2.0"),
        accel=lambda: AccelState("kvm", "/dev/kvm is present", True, "kvm booted the kernel"),
        image=lambda: Path("/c/vm-images/images/x"),
        vm_status=lambda: VmState("running", "the guest daemon answers"),
        ssh=lambda: None,
        vm_socket=VM_SOCK,
        docker_context=lambda: ContextState(f"unix://{VM_SOCK}", "default"),
        forwards=lambda: None)
    return dataclasses.replace(base, **kw)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_passthrough_healthy_skips_the_vm() -> None:
    checks = by_name(run_checks(probes({NATIVE_SOCKET})))
    assert checks["engine"].verdict is Verdict.OK and "native" in checks["engine"].detail
    assert checks["native socket"].verdict is Verdict.OK
    assert checks["pydeskd version"].detail.startswith("pydeskd 0.1.0")
    assert checks["VM"].verdict is Verdict.SKIP
    assert "qemu" not in checks
    assert healthy(list(checks.values()))


def test_vm_healthy_on_macos() -> None:
    checks = run_checks(probes({VM_SOCK}, platform="darwin"))
    names = [c.name for c in checks]
    assert names == ["engine", "qemu", "accelerator", "guest image", "VM instance",
                     "SSH channel", "host socket", "docker context", "port forwards"]
    assert all(c.verdict is Verdict.OK for c in checks), checks
    assert healthy(checks)


def test_auto_on_linux_with_the_vm_in_use_skips_passthrough() -> None:
    checks = by_name(run_checks(probes({VM_SOCK})))
    assert checks["native socket"].verdict is Verdict.SKIP
    assert checks["host socket"].verdict is Verdict.OK


def test_nothing_answers_fails_with_fixes_for_both() -> None:
    checks = by_name(run_checks(probes(set(), vm_status=lambda: VmState("absent", "none"))))
    assert checks["engine"].verdict is Verdict.FAIL
    assert "sudo pydesk engine start" in checks["engine"].fix
    assert checks["native socket"].fix == "start the native engine: sudo pydesk engine start"
    assert checks["VM instance"].verdict is Verdict.FAIL
    assert checks["VM instance"].fix == "pydesk vm start"
    assert checks["SSH channel"].verdict is Verdict.SKIP
    assert checks["host socket"].fix == "pydesk vm start"
    assert not healthy(list(checks.values()))


def test_mode_native_never_looks_at_the_vm() -> None:
    checks = by_name(run_checks(probes(set(), mode="native")))
    assert checks["native socket"].verdict is Verdict.FAIL
    assert checks["VM"].verdict is Verdict.SKIP and "qemu" not in checks


def test_flag_engine_checks_only_that_engine() -> None:
    p = dataclasses.replace(probes(set()), selection=lambda: selection(set(), host="/x.sock"))
    checks = run_checks(p)
    assert [c.name for c in checks] == ["engine", "engine version"]
    assert "--host" in checks[0].detail


def test_bad_mode_is_one_failed_check() -> None:
    def bad() -> Selection:
        raise ValueError("unknown mode 'fast': expected auto, native or vm")

    checks = run_checks(dataclasses.replace(probes(set()), selection=bad))
    assert [c.verdict for c in checks] == [Verdict.FAIL] and "fast" in checks[0].detail


def test_a_probe_that_raises_is_that_checks_failure_with_its_hint() -> None:
    def no_qemu() -> tuple[str, str]:
        raise NotFound("qemu-system-x86_64 not found on PATH", hint="install QEMU")

    checks = by_name(run_checks(probes({VM_SOCK}, qemu=no_qemu)))
    assert checks["qemu"] == Check("qemu", Verdict.FAIL, "qemu-system-x86_64 not found on PATH",
                                   "install QEMU")
    assert checks["host socket"].verdict is Verdict.OK  # the other checks still ran


def test_degraded_vm_and_a_broken_ssh_channel() -> None:
    def ssh() -> None:
        raise RuntimeError("the SSH channel opens but the guest daemon does not answer")

    checks = by_name(run_checks(probes(set(), vm_status=lambda: VmState(
        "degraded", "the guest daemon stopped answering", "timeout"), ssh=ssh)))
    assert checks["VM instance"].verdict is Verdict.FAIL
    assert "timeout" in checks["VM instance"].detail and "logs --agent" in checks[
        "VM instance"].fix
    assert checks["SSH channel"].verdict is Verdict.SKIP
    running = by_name(run_checks(probes(set(), ssh=ssh)))
    assert running["SSH channel"].verdict is Verdict.FAIL
    assert "does not answer" in running["SSH channel"].detail
    assert "agent" in running["host socket"].fix


def test_accelerator_verdicts_never_claim_what_was_not_probed() -> None:
    assert accel_check(AccelState("kvm", "present", True, "booted")).verdict is Verdict.OK
    unprobed = accel_check(AccelState("kvm", "/dev/kvm is present", None))
    assert unprobed.verdict is Verdict.WARN and "not probed" in unprobed.detail
    failed = accel_check(AccelState("kvm", "present", False, "made no progress in 3s"))
    assert failed.verdict is Verdict.WARN and "TCG" in failed.detail
    assert "made no progress" in failed.detail
    absent = accel_check(AccelState(None, "/dev/kvm does not exist", None))
    assert absent.verdict is Verdict.WARN and "/dev/kvm does not exist" in absent.detail


def test_a_running_vm_reports_the_accelerator_it_uses() -> None:
    def no_probe_read() -> AccelState:
        raise AssertionError("the cache is not read when the VM says what it uses")

    tcg = VmState("running", "ready", accel="tcg", accel_reason="TCG: kvm made no progress")
    checks = by_name(run_checks(probes({VM_SOCK}, vm_status=lambda: tcg, accel=no_probe_read)))
    assert checks["accelerator"].verdict is Verdict.WARN
    assert "tcg in use: TCG: kvm made no progress" in checks["accelerator"].detail
    kvm = VmState("running", "ready", accel="kvm", accel_reason="kvm booted the kernel")
    checks = by_name(run_checks(probes({VM_SOCK}, vm_status=lambda: kvm, accel=no_probe_read)))
    assert checks["accelerator"].verdict is Verdict.OK
    stopped = VmState("stopped", "powered off", accel="kvm")
    checks = by_name(run_checks(probes({VM_SOCK}, vm_status=lambda: stopped)))
    assert checks["accelerator"].detail == "kvm: kvm booted the kernel"  # the probe's cache


def test_image_and_context_warnings_do_not_fail_doctor() -> None:
    checks = run_checks(probes({VM_SOCK}, image=lambda: None,
                               docker_context=lambda: ContextState(None, "default")))
    found = by_name(checks)
    assert found["guest image"].verdict is Verdict.WARN
    assert found["docker context"].fix.startswith("pydesk context docker")
    assert healthy(checks)
    stale = by_name(run_checks(probes({VM_SOCK}, docker_context=lambda: ContextState(
        "unix:///old.sock", "pydesk"))))
    assert stale["docker context"].verdict is Verdict.WARN
    assert "/old.sock" in stale["docker context"].detail


def test_failed_forwards_fail_with_the_port_and_the_container() -> None:
    entries = [{"proto": "tcp", "host_ip": "127.0.0.1", "host_port": 8080, "container": "web",
                "error": "host port 8080 is already in use"},
               {"proto": "udp", "host_ip": "", "host_port": 53, "container": "dns", "error": ""}]
    checks = run_checks(probes({VM_SOCK}, forwards=lambda: entries))
    found = by_name(checks)
    assert found["port forwards"].detail == "1 of 2 forwarded"
    bad = found["port 127.0.0.1:8080/tcp"]
    assert bad.verdict is Verdict.FAIL and "web" in bad.detail and "already in use" in bad.detail
    assert not healthy(checks)


def test_read_forwards(tmp_path: Path) -> None:
    assert read_forwards(tmp_path / "absent.json") is None
    (tmp_path / "f.json").write_text(json.dumps([{"host_port": 1}, "junk"]))
    assert read_forwards(tmp_path / "f.json") == [{"host_port": 1}]
    (tmp_path / "g.json").write_text(json.dumps({"forwards": [{"host_port": 2}]}))
    assert read_forwards(tmp_path / "g.json") == [{"host_port": 2}]
    (tmp_path / "h.json").write_text("3")
    with pytest.raises(ValueError):
        read_forwards(tmp_path / "h.json")
    checks = run_checks(probes({VM_SOCK}, forwards=lambda: read_forwards(tmp_path / "h.json")))
    assert by_name(checks)["port forwards"].verdict is Verdict.FAIL
