"""``pydesk doctor``'s checks: each gives a verdict, what it saw, and how to fix it.

What it is for: the checks are pure functions over :class:`Probes`, the one seam through which
doctor looks at the machine (sockets, QEMU, caches, the instance's files), so every verdict is
unit-tested with fakes; :func:`real_probes` is the seam's real side. Which checks apply follows the
engine selection: passthrough (a native pydeskd on Linux) and/or the VM (QEMU, accelerator, guest
image, agent status, SSH channel, host socket, docker context, port forwards).
What it must never do: change anything, or run QEMU under an accelerator (the accelerator check
reads the probe's cached verdict; the probe itself, with its timeout, runs at ``pydesk vm start``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydesk.endpoint import NATIVE_SOCKET, Mode, Selection


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but worse than it could (TCG, no docker context yet...)
    FAIL = "fail"
    SKIP = "skip"  # does not apply to the engine in use


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "verdict": str(self.verdict), "detail": self.detail,
                "fix": self.fix}


@dataclass(frozen=True)
class AccelState:
    """What doctor knows about the accelerator without running one."""

    candidate: str | None  # the host's hardware accelerator (kvm, hvf, whpx) or None
    reason: str  # why there is (or is not) a candidate
    probed_ok: bool | None  # the cached probe's verdict in this host boot; None: not probed
    probe_reason: str = ""


@dataclass(frozen=True)
class VmState:
    state: str  # pydesk.agent.status.State values, or "absent"
    message: str
    error: str = ""
    accel: str = ""  # the accelerator of the running (or last) boot, and why it was chosen
    accel_reason: str = ""


@dataclass(frozen=True)
class ContextState:
    host: str | None  # the docker context's endpoint, None when there is no such context
    current: str  # the docker CLI's current context


@dataclass(frozen=True)
class Probes:
    """Every side effect doctor needs; each may raise (the check then fails with the error,
    and its ``hint`` attribute when it has one)."""

    selection: Callable[[], Selection]
    ping: Callable[[Path], bool]
    engine_version: Callable[[Path], str]
    qemu: Callable[[], tuple[str, str]]  # (binary, first line of --version)
    accel: Callable[[], AccelState]
    image: Callable[[], Path | None]
    vm_status: Callable[[], VmState]
    ssh: Callable[[], None]  # opens the channel and pings the guest daemon, or raises
    vm_socket: Path
    docker_context: Callable[[], ContextState]
    forwards: Callable[[], list[dict[str, Any]] | None]  # None: no forwards.json


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as e:  # a probe's failure is this check's verdict, not doctor's crash
        message = getattr(e, "message", None) or str(e) or type(e).__name__
        return Check(name, Verdict.FAIL, message, str(getattr(e, "hint", "") or ""))


def engine_check(selection: Selection) -> Check:
    if selection.engine is None:
        error = selection.error()
        return Check("engine", Verdict.FAIL, f"{error.message} ({selection.reason()})",
                     error.hint)
    return Check("engine", Verdict.OK, f"{selection.engine.base_url} "
                                      f"({selection.engine.source}): {selection.reason()}")


def uses_native(selection: Selection) -> bool:
    """Whether the passthrough checks apply: native chosen, or tried in vain."""
    return any(c.source == "native" for c in selection.candidates) and (
        selection.engine is None or selection.engine.source == "native")


def uses_vm(selection: Selection) -> bool:
    return any(c.source == "vm" for c in selection.candidates) and (
        selection.engine is None or selection.engine.source == "vm")


def native_checks(p: Probes) -> list[Check]:
    socket_name = "native socket"
    if not p.ping(NATIVE_SOCKET):
        return [Check(socket_name, Verdict.FAIL, f"{NATIVE_SOCKET} does not answer /_ping",
                      "start the native engine: sudo pydesk engine start"),
                Check("pydeskd version", Verdict.SKIP, "no native engine")]
    return [Check(socket_name, Verdict.OK, f"{NATIVE_SOCKET} answers /_ping"),
            _guarded("pydeskd version",
                     lambda: Check("pydeskd version", Verdict.OK,
                                   p.engine_version(NATIVE_SOCKET)))]


def qemu_check(p: Probes) -> Check:
    binary, version = p.qemu()
    return Check("qemu", Verdict.OK, f"{binary}: {version}")


def accel_check(state: AccelState) -> Check:
    name = "accelerator"
    if state.candidate is None:
        return Check(name, Verdict.WARN, f"TCG, software emulation (slow): {state.reason}",
                     "enable hardware virtualization (KVM: load kvm_intel/kvm_amd and get "
                     "access to /dev/kvm; nested virtualization on a cloud VM)")
    if state.probed_ok is None:
        return Check(name, Verdict.WARN, f"{state.candidate} not probed yet in this host boot "
                                         f"({state.reason})",
                     "pydesk vm start probes it (with a timeout) and falls back to TCG")
    if state.probed_ok:
        return Check(name, Verdict.OK, f"{state.candidate}: {state.probe_reason}")
    return Check(name, Verdict.WARN, f"TCG, software emulation (slow): {state.candidate} "
                                     f"failed its probe: {state.probe_reason}",
                 f"{state.candidate} is present but does not run a guest here: check the "
                 "host's virtualization settings; pydesk keeps using TCG")


def image_check(image: Path | None) -> Check:
    if image is None:
        return Check("guest image", Verdict.WARN, "not built or pulled for this pydesk version",
                     "pydesk vm start builds it (as root, minutes), or pydesk vm image pull REF")
    return Check("guest image", Verdict.OK, str(image))


def status_check(vm: VmState, name: str) -> Check:
    label = "VM instance"
    start = f"pydesk vm start --name {name}" if name != "default" else "pydesk vm start"
    if vm.state == "absent":
        return Check(label, Verdict.FAIL, f"no VM named {name!r}", start)
    if vm.state == "running":
        return Check(label, Verdict.OK, f"{name}: running ({vm.message})")
    if vm.state == "starting":
        return Check(label, Verdict.WARN, f"{name}: starting ({vm.message})",
                     f"wait, or follow it: pydesk vm logs -f --name {name}")
    detail = f"{name}: {vm.state} ({vm.message})" + (f": {vm.error}" if vm.error else "")
    fix = (f"see pydesk vm logs --agent --name {name}; then pydesk vm stop and start"
           if vm.state == "degraded" else start)
    return Check(label, Verdict.FAIL, detail, fix)


def host_socket_check(p: Probes, running: bool) -> Check:
    if p.ping(p.vm_socket):
        return Check("host socket", Verdict.OK, f"{p.vm_socket} answers /_ping")
    return Check("host socket", Verdict.FAIL, f"{p.vm_socket} does not answer /_ping",
                 "the host agent serves it: pydesk vm stop && pydesk vm start" if running
                 else "pydesk vm start")


def context_check(state: ContextState, expected: str) -> Check:
    name = "docker context"
    if state.host is None:
        return Check(name, Verdict.WARN, "the docker CLI has no context `pydesk`",
                     "pydesk context docker (then docker --context pydesk ps)")
    if state.host != expected:
        return Check(name, Verdict.WARN, f"`pydesk` points at {state.host}, not {expected}",
                     "pydesk context docker (rewrites it)")
    return Check(name, Verdict.OK, f"pydesk -> {state.host} (docker's current context: "
                                  f"{state.current})")


def forward_checks(entries: Sequence[dict[str, Any]] | None) -> list[Check]:
    if not entries:
        return [Check("port forwards", Verdict.OK, "none failed" if entries is None
                      else "no published ports")]
    failed = [e for e in entries if e.get("error")]
    checks = [Check("port forwards", Verdict.OK if not failed else Verdict.FAIL,
                    f"{len(entries) - len(failed)} of {len(entries)} forwarded")]
    for e in failed:
        where = f"{e.get('host_ip') or '127.0.0.1'}:{e.get('host_port')}/{e.get('proto', 'tcp')}"
        checks.append(Check(f"port {where}", Verdict.FAIL,
                            f"container {e.get('container', '?')}: {e.get('error')}",
                            "free that host port (or publish another: -p OTHER:PORT), then "
                            "restart the container"))
    return checks


def running_accel_check(vm: VmState) -> Check:
    """The accelerator the running VM really uses (what the probe decided at its start)."""
    detail = f"{vm.accel} in use" + (f": {vm.accel_reason}" if vm.accel_reason else "")
    if vm.accel == "tcg":
        return Check("accelerator", Verdict.WARN, f"{detail} (software emulation, slow)",
                     "enable hardware virtualization, then pydesk vm stop && pydesk vm start")
    return Check("accelerator", Verdict.OK, detail)


def vm_checks(p: Probes, name: str) -> list[Check]:
    vm: VmState | None = None

    def status() -> Check:
        nonlocal vm
        vm = p.vm_status()
        return status_check(vm, name)

    instance = _guarded("VM instance", status)
    running = instance.verdict is Verdict.OK
    accel = running_accel_check(vm) if running and vm is not None and vm.accel else \
        _guarded("accelerator", lambda: accel_check(p.accel()))
    checks = [_guarded("qemu", lambda: qemu_check(p)), accel,
              _guarded("guest image", lambda: image_check(p.image())), instance]
    if running:
        def ssh() -> Check:
            p.ssh()
            return Check("SSH channel", Verdict.OK, "the guest daemon answers /_ping over SSH")
        checks.append(_guarded("SSH channel", ssh))
    else:
        checks.append(Check("SSH channel", Verdict.SKIP, "the VM is not running"))
    checks.append(_guarded("host socket", lambda: host_socket_check(p, running)))
    checks.append(_guarded("docker context",
                           lambda: context_check(p.docker_context(), f"unix://{p.vm_socket}")))
    try:
        checks += forward_checks(p.forwards())
    except Exception as e:
        checks.append(Check("port forwards", Verdict.FAIL, f"forwards.json unreadable: {e}"))
    return checks


def run_checks(p: Probes, name: str = "default") -> list[Check]:
    """Every check that applies to the engine selection, in the order a user reads them."""
    try:
        selection = p.selection()
    except ValueError as e:  # a bad mode in the flag or ~/.pydesk/config.json
        return [Check("engine", Verdict.FAIL, str(e), 'set "mode" to auto, native or vm')]
    checks = [engine_check(selection)]
    if selection.mode is None:  # -H / PYDESK_HOST: the user's own engine
        engine = selection.engine
        assert engine is not None
        if engine.base_url.startswith("unix://"):
            path = Path(engine.base_url.removeprefix("unix://"))
            checks.append(_guarded("engine version",
                                   lambda: Check("engine version", Verdict.OK,
                                                 p.engine_version(path))))
        return checks
    if uses_native(selection):
        checks += native_checks(p)
    elif selection.platform.startswith("linux") and selection.mode is not Mode.VM:
        checks.append(Check("native socket", Verdict.SKIP, "the VM's engine is in use"))
    if uses_vm(selection):
        checks += vm_checks(p, name)
    elif any(c.source == "vm" for c in selection.candidates) or selection.mode is Mode.NATIVE:
        checks.append(Check("VM", Verdict.SKIP, "the native engine is in use"))
    return checks


def healthy(checks: Sequence[Check]) -> bool:
    """Exit status 0 when no check failed (warnings and skips do not fail doctor)."""
    return all(c.verdict is not Verdict.FAIL for c in checks)


def read_forwards(path: Path) -> list[dict[str, Any]] | None:
    """The port forwarder's forwards.json (a list of forwards), None when absent."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if isinstance(data, dict):  # tolerate {"forwards": [...]}
        data = data.get("forwards", [])
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list")
    return [e for e in data if isinstance(e, dict)]
