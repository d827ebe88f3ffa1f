"""Start, stop, status and removal of a VM instance: what ``pydesk vm`` calls.

What it is for: :func:`start` prepares everything that can fail with a clear message in the
user's terminal (image, accelerator probe, keys, data disk, guest configuration), then hands the
instance to a detached agent and follows its status lines until the guest API answers.
:func:`stop`, :func:`status`, :func:`remove` and :func:`connect` find the agent and QEMU by pid
file and command line.
What it must never do: start a second agent for a running instance (a QEMU whose agent died is
adopted by the new agent, not booted again), or remove a running one without ``force``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydesk.agent.process import find_agent, find_qemu, spawn_agent
from pydesk.agent.status import (
    State,
    StatusEvent,
    append_status,
    follow_status,
    last_status,
    read_status,
    status_size,
)
from pydesk.vm.accel import Verdict, choose_accelerator
from pydesk.vm.config import VmConfig, detect_host
from pydesk.vm.disks import GIB, DiskChange, ensure_data_disk
from pydesk.vm.errors import Conflict, NotFound, VmError
from pydesk.vm.instance import (
    InstanceFiles,
    accel_cache_file,
    ensure_keys,
    instance_files,
    load_config,
    save_config,
    write_private,
)
from pydeskd import vmcontract

if TYPE_CHECKING:
    from pydesk.vm.channel import GuestChannel  # paramiko: ~60 ms, only for connect()

Progress = Callable[[str], None]
OnEvent = Callable[[StatusEvent], None]
IMAGE_DIR_ENV = "PYDESK_VM_IMAGE_DIR"
START_TIMEOUT = 240.0


def _quiet(_: object) -> None:
    pass


@dataclass(frozen=True)
class StartOptions:
    """``pydesk vm start`` flags; None keeps the saved value (or the default on first start)."""

    name: str = "default"
    cpus: int | None = None
    memory_mib: int | None = None
    disk_gib: int | None = None
    accel: str | None = None
    daemon_json: str | None = None
    stop_timeout: float | None = None


@dataclass(frozen=True)
class VmStatus:
    name: str
    state: State
    message: str
    error: str = ""
    since: str = ""
    accel: str = ""
    accel_reason: str = ""
    ssh_port: int = 0
    agent_pid: int = 0
    qemu_pid: int = 0
    start_mode: str = ""
    """How the running VM was started: cold, resumed (from the saved state) or adopted."""

    def to_json(self) -> dict[str, object]:
        return {k: (str(v) if isinstance(v, State) else v) for k, v in self.__dict__.items()}


def resolve_image(progress: Progress) -> Path:
    """The guest image directory: ``$PYDESK_VM_IMAGE_DIR``, else built or pulled by
    ``pydesk.vm.image.ensure_image`` (cached by recipe hash)."""
    override = os.environ.get(IMAGE_DIR_ENV)
    if override:
        image = Path(override)
    else:
        from pydesk.vm.image import ensure_image  # the builder: heavy, only when needed

        image = ensure_image(progress)
    missing = [n for n in (vmcontract.KERNEL_FILE, vmcontract.INITRD_FILE,
                           vmcontract.ROOTFS_FILE) if not (image / n).exists()]
    if missing:
        raise NotFound(f"the guest image at {image} lacks {', '.join(missing)}",
                       hint="pydesk vm image build")
    return image


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def prepare(options: StartOptions, progress: Progress) -> tuple[InstanceFiles, VmConfig, Verdict]:
    """Everything before the agent: config merged with flags, image, accelerator, keys, disk."""
    files = instance_files(options.name)
    files.dir.mkdir(parents=True, exist_ok=True)
    saved = load_config(files) if files.exists() else VmConfig(name=options.name)
    previous = _read_json(files.launch)
    requested = options.accel or str(previous.get("accel_request") or "auto")
    host = detect_host()
    image = resolve_image(progress)
    verdict = choose_accelerator(requested, host, image / vmcontract.KERNEL_FILE,
                                 accel_cache_file(files.dir.parent))
    progress(f"accelerator: {verdict.accel} ({verdict.reason})")
    config = replace(saved, accel=verdict.accel, arch=host.arch,
                     cpus=options.cpus or saved.cpus,
                     memory_mib=options.memory_mib or saved.memory_mib,
                     disk_gib=options.disk_gib or saved.disk_gib,
                     daemon_json=options.daemon_json if options.daemon_json is not None
                     else saved.daemon_json,
                     stop_timeout=options.stop_timeout or saved.stop_timeout)
    keys = ensure_keys(files)
    disk = ensure_data_disk(files.data_disk, config.disk_gib, host.qemu_img)
    if disk.change is DiskChange.CREATED:
        progress(f"data disk created: {config.disk_gib} GiB qcow2 (sparse)")
    elif disk.change is DiskChange.GROWN:
        progress(f"data disk grown from {disk.previous_bytes / GIB:g} to {config.disk_gib} GiB")
    guest = vmcontract.GuestConfig(instance=config.name, authorized_key=keys.client_public_line,
                                   ssh_host_key=keys.host_private_text,
                                   daemon_json=config.daemon_json)
    write_private(files.guest_config, json.dumps(guest.to_json()).encode())
    save_config(files, config)
    write_private(files.launch, json.dumps({
        "image_dir": str(image), "accel_request": requested,
        "accel_reason": verdict.reason}).encode(), 0o644)
    return files, config, verdict


def start(options: StartOptions, progress: Progress = _quiet, on_event: OnEvent = _quiet, *,
          timeout: float = START_TIMEOUT) -> StatusEvent:
    """Starts the VM (or finds it running) and returns the 'running' event.

    Raises VmError when the agent reports stopped or degraded during the start, or on timeout.
    """
    files = instance_files(options.name)
    if find_agent(files) is not None:
        history, offset = read_status(files.status)  # one read: no event between the two
        current = history[-1] if history else None
        if current is not None and current.state is State.RUNNING:
            progress("already running")
            return current
        if current is not None and current.state is not State.STARTING:
            raise Conflict(f"VM {options.name!r} is {current.state}: {current.message}",
                           hint=f"pydesk vm stop --name {options.name}, then start again")
        progress("already starting")
        return _follow_start(files, offset, progress, on_event, timeout)
    try:
        with start_lock(files):
            if find_agent(files) is None:
                qemu = find_qemu(files)
                if qemu is not None:
                    # Its agent was killed: the VM (and its containers) kept running. A new
                    # agent adopts it as it is: nothing is prepared, nothing restarted.
                    progress(f"QEMU of VM {options.name!r} runs without its agent (pid "
                             f"{qemu.pid}): adopting it")
                else:
                    files, _, _ = prepare(options, progress)
                offset = status_size(files.status)
                pid = spawn_agent(files)
                # Hold the lock until the agent's pid file names it: a second start finds it.
                deadline = time.monotonic() + 10
                while find_agent(files) is None and time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.02)
                spawned = True
            else:
                spawned = False  # another start won the race between our checks and the lock
    except StartInProgress:
        # Another start is preparing (image, probe, disk): wait for its agent, then follow it.
        progress("another start is preparing this VM; following it")
        deadline = time.monotonic() + timeout
        while files.lock.exists() and find_agent(files) is None:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        spawned = False
    if not spawned:
        return start(options, progress, on_event, timeout=timeout)
    progress("agent started, booting the VM")
    return _follow_start(files, offset, progress, on_event, timeout)


class StartInProgress(Conflict):
    """Another ``start`` holds the instance's start lock."""


def _alive(pid: int) -> bool:
    import psutil  # type: ignore[import-untyped]

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def start_lock(files: InstanceFiles) -> Iterator[None]:
    """One ``start`` at a time per instance: an O_EXCL file holding the starter's pid (a dead
    starter's lock is taken over). Raises StartInProgress while another start prepares."""
    files.dir.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(files.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = int(files.lock.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _alive(holder):
                raise StartInProgress(f"another 'pydesk vm start' (pid {holder}) is preparing VM "
                               f"{files.name!r}", hint="wait for it, or pydesk vm status") \
                    from None
            files.lock.unlink(missing_ok=True)  # stale: its starter died
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:
        raise Conflict(f"cannot take the start lock {files.lock}")
    try:
        yield
    finally:
        files.lock.unlink(missing_ok=True)


def _follow_start(files: InstanceFiles, offset: int, progress: Progress, on_event: OnEvent,
                  timeout: float) -> StatusEvent:
    deadline = time.monotonic() + timeout
    gone_since: float | None = None
    while time.monotonic() < deadline:
        events, offset = read_status(files.status, offset)
        for event in events:
            on_event(event)
            if event.state is State.RUNNING:
                return event
            if event.state in (State.STOPPED, State.DEGRADED):
                detail = f": {event.error}" if event.error not in ("", event.message) else ""
                raise VmError(f"the VM did not start: {event.message}{detail}",
                              hint=f"pydesk vm logs --name {files.name}")
        if events:
            continue
        if find_agent(files) is None:
            # Give the agent a moment to write its pid file; then it is really gone.
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > 5:
                raise VmError("the agent exited without a status",
                              hint=f"see {files.agent_log}")
        else:
            gone_since = None
        time.sleep(0.1)
    raise VmError(f"the VM did not start in {timeout:g}s", hint=f"pydesk vm logs --name "
                                                                f"{files.name}")


def stop(name: str, *, timeout: float | None = None, on_event: OnEvent = _quiet) -> str:
    """Powers the VM off (ACPI, then quit after the timeout); returns what happened."""
    files = instance_files(name)
    config = load_config(files)
    grace = timeout if timeout is not None else config.stop_timeout
    agent = find_agent(files)
    if agent is not None:
        offset = status_size(files.status)
        write_private(files.stop_request, f"{grace}\n".encode(), 0o644)
        if sys.platform != "win32":
            agent.send_signal(signal.SIGTERM)
        final = "stopped"
        deadline = time.monotonic() + grace + 30
        for event in follow_status(files.status, offset, timeout=grace + 30):
            on_event(event)
            if event.state is State.STOPPED:
                final = event.message
                break
            if time.monotonic() > deadline:
                break
        import psutil

        try:
            agent.wait(10)
        except psutil.TimeoutExpired as e:
            raise VmError(f"the agent of {name!r} did not exit", hint="pydesk vm rm --force") from e
        return final
    qemu = find_qemu(files)
    if qemu is None:
        return "not running"
    return _stop_orphan_qemu(files, qemu, grace)


def _stop_orphan_qemu(files: InstanceFiles, qemu: Any, grace: float) -> str:
    """QEMU without its agent (the agent was killed): power it off through QMP ourselves."""
    import psutil

    from pydesk.vm.qmp import Qmp, QmpError

    qmp = Qmp(files.qmp_socket)
    try:
        qmp.system_powerdown()
        qemu.wait(grace)
        message = "the guest powered off (QEMU had no agent)"
    except (QmpError, psutil.TimeoutExpired):
        try:
            qmp.quit()
            qemu.wait(15)
            message = "QEMU quit (it had no agent)"
        except (QmpError, psutil.TimeoutExpired):
            qemu.kill()
            message = "QEMU killed (it had no agent and did not answer)"
    append_status(files.status, StatusEvent.now(State.STOPPED, message))
    for path in (files.runtime, files.qemu_pid, files.qmp_socket):
        path.unlink(missing_ok=True)
    return message


def status(name: str) -> VmStatus:
    files = instance_files(name)
    if not files.exists():
        raise NotFound(f"no VM named {name!r}", hint="pydesk vm start")
    event = last_status(files.status)
    agent, qemu = find_agent(files), find_qemu(files)
    runtime = _read_json(files.runtime)
    launch = _read_json(files.launch)
    accel = str(runtime.get("accel") or load_config(files).accel)  # running, else last used
    base: dict[str, Any] = {"name": name, "accel": accel,
            "accel_reason": str(launch.get("accel_reason", "")),
            "agent_pid": agent.pid if agent else 0, "qemu_pid": qemu.pid if qemu else 0}
    if agent is not None and event is not None:
        return VmStatus(state=event.state, message=event.message, error=event.error,
                        since=event.time, ssh_port=int(runtime.get("ssh_port", 0)),
                        start_mode=str(runtime.get("start_mode", "")), **base)
    if qemu is not None:
        return VmStatus(state=State.DEGRADED, message="QEMU runs without its agent",
                        error="the agent is not running (pydesk vm start adopts the VM)",
                        **base)
    if event is None:
        return VmStatus(state=State.STOPPED, message="never started", **base)
    if event.state is not State.STOPPED:
        return VmStatus(state=State.STOPPED, message=f"the agent is gone (last: {event.message})",
                        error="the agent exited without reporting", since=event.time, **base)
    return VmStatus(state=State.STOPPED, message=event.message, error=event.error,
                    since=event.time, **base)


def remove(name: str, *, force: bool = False) -> None:
    """Deletes the instance (its data disk too). A running VM needs ``force`` (killed)."""
    files = instance_files(name)
    if not files.dir.exists():
        raise NotFound(f"no VM named {name!r}")
    agent, qemu = find_agent(files), find_qemu(files)
    if (agent or qemu) and not force:
        raise Conflict(f"VM {name!r} is running", hint=f"pydesk vm stop --name {name}, or "
                                                      "pydesk vm rm --force")
    for proc in (agent, qemu):
        if proc is not None:
            proc.kill()
            proc.wait(10)
    shutil.rmtree(files.dir)


def connect(name: str, timeout: float = 10.0) -> GuestChannel:
    """An SSH channel to the running VM (pinned host key, instance client key)."""
    from pydesk.vm.channel import GuestChannel

    files = instance_files(name)
    runtime = _read_json(files.runtime)
    port = int(runtime.get("ssh_port", 0))
    if not port or find_qemu(files) is None:
        raise Conflict(f"VM {name!r} is not running", hint=f"pydesk vm start --name {name}")
    keys = ensure_keys(files)
    return GuestChannel.connect(port, keys.client_private, keys.host_public_line,
                                timeout=timeout)
