"""The real side of ``pydesk doctor``'s seam (:func:`real_probes`), and the report's rendering.

Imported only when ``pydesk doctor`` runs (start-up time).
What it must never do: change anything, or run QEMU under an accelerator (the probe's cached
verdict is read, never made).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from pydesk.cli.context import options, unix_get_json
from pydesk.cli.doctor_checks import (
    AccelState,
    Check,
    ContextState,
    Probes,
    Verdict,
    VmState,
    read_forwards,
)

MARKS = {Verdict.OK: "[ok]  ", Verdict.WARN: "[warn]", Verdict.FAIL: "[FAIL]",
         Verdict.SKIP: "[skip]"}
PROBE_TIMEOUT = 5.0


def engine_version(socket_path: Path) -> str:
    v = unix_get_json(str(socket_path), "/version", timeout=PROBE_TIMEOUT)
    return (f"{v.get('Platform', {}).get('Name') or 'engine'} {v.get('Version', '?')} "
            f"(API {v.get('ApiVersion', '?')}, {v.get('Os', '?')}/{v.get('Arch', '?')})")


def qemu_version() -> tuple[str, str]:
    from pydesk.vm.config import detect_host

    binary = detect_host().qemu_binary
    done = subprocess.run([binary, "--version"], capture_output=True, text=True,
                          timeout=PROBE_TIMEOUT, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{binary} --version failed (exit {done.returncode})")
    return binary, lines[0]


def accel_state() -> AccelState:
    """The host's hardware accelerator and the probe's cached verdict for this host boot."""
    from pydesk.vm.accel import boot_id, hardware_candidate
    from pydesk.vm.config import detect_host
    from pydesk.vm.instance import accel_cache_file

    host = detect_host()
    accel, reason = hardware_candidate(host)
    if accel is None:
        return AccelState(None, reason, None)
    try:
        cache = json.loads(accel_cache_file().read_text())
    except (OSError, ValueError):
        cache = {}
    entries = cache.get("verdicts", {}) if cache.get("boot_id") == boot_id() else {}
    entry = entries.get(f"{accel}|{host.qemu_binary}")
    if not isinstance(entry, dict):
        return AccelState(str(accel), reason, None)
    return AccelState(str(accel), reason, bool(entry.get("ok")), str(entry.get("reason", "")))


def guest_image() -> Path | None:
    from pydesk.vm.lifecycle import IMAGE_DIR_ENV

    override = os.environ.get(IMAGE_DIR_ENV)
    if override:
        return Path(override) if Path(override).is_dir() else None
    from pydesk.vm.image import image_dir_for_current_sources

    return image_dir_for_current_sources()


def vm_state(name: str) -> VmState:
    from pydesk.vm.errors import NotFound
    from pydesk.vm.lifecycle import status

    try:
        current = status(name)
    except NotFound:
        return VmState("absent", f"no VM named {name!r}")
    return VmState(str(current.state), current.message, current.error, current.accel,
                   current.accel_reason)


def ssh_ping(name: str) -> None:
    from pydesk.vm.lifecycle import connect

    with connect(name, timeout=PROBE_TIMEOUT) as channel:
        if not channel.ping(timeout=PROBE_TIMEOUT):
            raise RuntimeError("the SSH channel opens but the guest daemon does not answer")


def docker_context_state() -> ContextState:
    from pydesk import dockercontext

    config_dir = dockercontext.docker_config_dir()
    stored = dockercontext.read_context(config_dir)
    return ContextState(stored.host if stored else None,
                        dockercontext.current_context(config_dir))


def forwards(name: str) -> list[dict[str, Any]] | None:
    from pydesk.vm.instance import instance_files

    return read_forwards(instance_files(name).dir / "forwards.json")


def real_probes(name: str) -> Probes:
    from pydesk.endpoint import explain, ping_unix, vm_socket

    return Probes(
        selection=lambda: explain(options["host"], options["mode"]),
        ping=ping_unix, engine_version=engine_version, qemu=qemu_version, accel=accel_state,
        image=guest_image, vm_status=lambda: vm_state(name), ssh=lambda: ssh_ping(name),
        vm_socket=vm_socket(), docker_context=docker_context_state,
        forwards=lambda: forwards(name))


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{MARKS[c.verdict]} {c.name.ljust(width)}  {c.detail}")
        if c.fix and c.verdict in (Verdict.FAIL, Verdict.WARN):
            lines.append(f"       {' ' * width}  fix: {c.fix}")
    return "\n".join(lines)
