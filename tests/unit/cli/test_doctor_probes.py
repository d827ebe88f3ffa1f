"""The real side of doctor's seam on files made here: the accelerator probe's cache (read, never
made), the guest image override, an absent instance, forwards.json, and the report's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pydesk.cli import doctor_probes
from pydesk.cli.doctor_checks import Check, Verdict
from pydesk.vm.accel import boot_id, hardware_candidate
from pydesk.vm.config import detect_host


@pytest.fixture
def pydesk_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYDESK_HOME", str(tmp_path))
    return tmp_path


def test_accel_state_reads_this_boots_cached_verdict_only(pydesk_home: Path) -> None:
    host = detect_host()
    accel, _ = hardware_candidate(host)
    state = doctor_probes.accel_state()
    if accel is None:  # no /dev/kvm here: nothing to read
        assert state.candidate is None
        return
    assert (state.candidate, state.probed_ok) == (str(accel), None)  # no cache: not probed
    verdict = {"ok": False, "reason": "made no progress in 3s", "seconds": 3.0}
    cache = pydesk_home / "accel-cache.json"
    cache.write_text(json.dumps({"boot_id": "another boot",
                                 "verdicts": {f"{accel}|{host.qemu_binary}": verdict}}))
    assert doctor_probes.accel_state().probed_ok is None  # a verdict from another boot
    cache.write_text(json.dumps({"boot_id": boot_id(),
                                 "verdicts": {f"{accel}|{host.qemu_binary}": verdict}}))
    state = doctor_probes.accel_state()
    assert (state.probed_ok, state.probe_reason) == (False, "made no progress in 3s")


def test_image_override_and_absent_instance(pydesk_home: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYDESK_VM_IMAGE_DIR", str(pydesk_home))
    assert doctor_probes.guest_image() == pydesk_home
    monkeypatch.setenv("PYDESK_VM_IMAGE_DIR", str(pydesk_home / "absent"))
    assert doctor_probes.guest_image() is None
    assert doctor_probes.vm_state("default").state == "absent"
    assert doctor_probes.forwards("default") is None
    (pydesk_home / "default").mkdir()
    (pydesk_home / "default" / "forwards.json").write_text('[{"host_port": 8080}]')
    assert doctor_probes.forwards("default") == [{"host_port": 8080}]


def test_render_puts_fixes_under_failures_and_warnings() -> None:
    text = doctor_probes.render([Check("engine", Verdict.OK, "unix:///s (native)"),
                                 Check("host socket", Verdict.FAIL, "no answer", "pydesk vm start"),
                                 Check("VM", Verdict.SKIP, "native in use", "ignored")])
    assert text.splitlines() == ["[ok]   engine       unix:///s (native)",
                                 "[FAIL] host socket  no answer",
                                 "                    fix: pydesk vm start",
                                 "[skip] VM           native in use"]
