"""How the agent gets a VM: adopt the instance's running QEMU, resume the saved state, or boot.

What it is for: :func:`launch` picks, in this order, (1) adopting a live QEMU of this instance
(its agent was killed: the VM and its containers kept running), (2) resuming the saved VM state
when its key matches this launch (``pydesk.vm.resume``), (3) a cold boot, which saves a new
state when the guest reaches its snapshot point (:func:`serve_ctl`). A resume that fails in any
way (QEMU error, timeout, a guest that never answers) discards the state, says why, and cold
boots: the user always gets a VM.
What it must never do: save a state anywhere but at the guest's snapshot point, of a guest other
than one this agent cold-booted; or load a state whose key does not match.
"""

from __future__ import annotations

import os
import shlex
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydesk.agent.process import find_qemu
from pydesk.agent.qemuproc import Spawned, continue_if_paused, find_adoptable, ssh_port_of
from pydesk.agent.status import State
from pydesk.vm import resume
from pydesk.vm.config import HostInfo, VmConfig, detect_host
from pydesk.vm.errors import VmError
from pydesk.vm.qemu import LaunchFiles, qemu_argv
from pydesk.vm.qmp import Qmp, QmpError
from pydesk.vm.run import run
from pydeskd import vmcontract

if TYPE_CHECKING:
    from pydesk.agent.main import Agent

QMP_WAIT = 15.0
CTL_CONNECT_TIMEOUT = 10.0
SAVE_QMP_TIMEOUT = 30.0


class Mode(StrEnum):
    COLD = "cold"
    RESUMED = "resumed"
    ADOPTED = "adopted"


def launch(agent: Agent, config: VmConfig, launch: dict[str, Any]) -> None:
    """Adopt, resume or cold boot; reports which. Raises VmError/OSError when QEMU cannot start."""
    host = detect_host()
    adopted = find_adoptable(agent.files, host.qemu_binary)
    if adopted is not None:
        _adopt(agent, config, adopted)
        return
    other = find_qemu(agent.files)
    if other is not None:  # named by our pid file, but not our binary or sockets: hands off
        raise VmError(f"a QEMU of this instance runs (pid {other.pid}) but cannot be adopted",
                      hint=f"pydesk vm stop --name {agent.files.name}")
    image = Path(str(launch["image_dir"]))
    files = agent.files
    if files.console_log.exists():
        os.replace(files.console_log, files.previous_console_log)
    agent.ssh_port = agent_free_port()
    argv = _argv(agent, config, host, image, incoming=False)
    key = _resume_key(agent, host, image, argv)
    if key is not None:
        usable, why = resume.check_saved(files, key)
        if usable and _resume(agent, config, host, image):
            return
        if not usable and (files.resume_state.exists() or files.resume_meta.exists()):
            agent.report(State.STARTING, f"{why}: cold boot (a new state will be saved)")
            resume.discard(files)
    agent.save_key = key
    _spawn(agent, config, argv, Mode.COLD, launch)
    agent.released = False


def cold_boot_after_failed_resume(agent: Agent, config: VmConfig, launch: dict[str, Any]) -> None:
    """The resumed guest never answered: drop the state, kill QEMU, boot cold (and save anew)."""
    _kill(agent)
    resume.discard(agent.files)
    agent.resume_failed = False
    agent.start_note = "cold boot after a failed resume; "
    host = detect_host()
    image = Path(str(launch["image_dir"]))
    argv = _argv(agent, config, host, image, incoming=False)
    agent.save_key = _resume_key(agent, host, image, argv)
    _spawn(agent, config, argv, Mode.COLD, launch)
    agent.released = False


def serve_ctl(agent: Agent) -> None:
    """One step of the control port: on the guest's first at-snapshot-point of a cold boot, save
    the VM (when a key was computed), then send the go line. Waits up to 0.25 s for input."""
    try:
        if agent.ctl is None:
            agent.ctl = resume.CtlPort.connect(agent.files.ctl_socket, CTL_CONNECT_TIMEOUT,
                                               agent.qemu_alive)
        lines = agent.ctl.lines(0.25 if not agent.released else 0.0)
        if vmcontract.CTL_AT_SNAPSHOT_POINT not in lines:
            return
        if agent.mode is Mode.COLD and not agent.released and agent.save_key is not None:
            _save(agent, agent.save_key)
        agent.ctl.send_go()
        agent.released = True
    except resume.ResumeError as e:
        if agent.ctl is not None:
            agent.ctl.close()
            agent.ctl = None
        if agent.mode is Mode.ADOPTED:
            agent.released = True  # best effort there: the guest is most likely long past it
        else:
            agent.report(State.STARTING, "the guest's control port failed; retrying", e.message)
            agent.stop_event.wait(1.0)


def agent_free_port() -> int:
    from pydesk.agent.main import free_loopback_port

    return free_loopback_port()


# --- the three ways ---------------------------------------------------------------------------

def _adopt(agent: Agent, config: VmConfig, adopted: Any) -> None:
    cmdline = adopted.proc.cmdline()
    agent.qemu = adopted
    agent.mode = Mode.ADOPTED
    agent.ssh_port = ssh_port_of(cmdline)
    if not agent.ssh_port:
        raise VmError(f"the running QEMU (pid {adopted.pid}) has no ssh forward",
                      hint=f"pydesk vm stop --name {agent.files.name}")
    agent.start_note = f"adopted a running VM (pid {adopted.pid}); "
    try:
        # An agent killed between QMP stop and cont (saving the state) left the VM paused.
        woke = continue_if_paused(Qmp(agent.files.qmp_socket))
    except QmpError as e:  # the VM most likely runs: waiting for the guest will tell
        agent.report(State.STARTING, "QMP on the adopted QEMU failed: its run state is unknown",
                     e.message)
    except VmError as e:
        raise VmError(e.message, hint=f"pydesk vm stop --name {agent.files.name}") from e
    else:
        if woke:
            agent.report(State.STARTING, woke)
            agent.start_note += "it was paused and is running again; "
    agent.record_runtime(ssh_port=agent.ssh_port, qemu_pid=adopted.pid, agent_pid=os.getpid(),
                         accel=config.accel.value, start_mode=Mode.ADOPTED.value,
                         adopted_at=time.time())
    agent.report(State.STARTING, f"adopted a running VM (pid {adopted.pid}, ssh on "
                                 f"127.0.0.1:{agent.ssh_port})")


def _resume(agent: Agent, config: VmConfig, host: HostInfo, image: Path) -> bool:
    """Loads the saved state; False (state discarded, QEMU killed) when anything fails."""
    files = agent.files
    argv = _argv(agent, config, host, image, incoming=True)
    _spawn(agent, config, argv, Mode.RESUMED, {})
    try:
        _wait_qmp(agent)
        seconds = resume.load(Qmp(files.qmp_socket, timeout=resume.LOAD_TIMEOUT), files,
                              agent.qemu_alive)
        agent.ctl = resume.CtlPort.connect(files.ctl_socket, CTL_CONNECT_TIMEOUT,
                                           agent.qemu_alive)
        agent.ctl.send_go()
    except (resume.ResumeError, VmError) as e:
        agent.report(State.STARTING, "resuming the saved VM state failed: discarded, cold boot",
                     f"{e.message} {agent.last_qemu_error()}".strip())
        _kill(agent)
        resume.discard(files)
        agent.mode = Mode.COLD
        return False
    agent.released = True
    agent.start_note = "resumed from the saved state; "
    agent.record_runtime(start_mode=Mode.RESUMED.value, resume_seconds=round(seconds, 3))
    agent.report(State.STARTING, f"resumed the saved VM state in {seconds:.1f}s")
    return True


def _save(agent: Agent, key: str) -> None:
    try:
        saved = resume.save(Qmp(agent.files.qmp_socket, timeout=SAVE_QMP_TIMEOUT), agent.files,
                            key)
    except resume.ResumeError as e:
        agent.report(State.STARTING, "the VM state could not be saved (later starts boot cold)",
                     e.message)
        return
    agent.record_runtime(state_saved_seconds=saved.save_seconds)
    agent.report(State.STARTING, f"saved the VM state at the guest's snapshot point in "
                                 f"{saved.save_seconds:.1f}s ({saved.size / 2**20:.0f} MiB): "
                                 "later starts resume from it")


# --- helpers ----------------------------------------------------------------------------------

def _argv(agent: Agent, config: VmConfig, host: HostInfo, image: Path, *,
          incoming: bool) -> list[str]:
    files = agent.files
    return qemu_argv(config, host, LaunchFiles(
        kernel=image / vmcontract.KERNEL_FILE, initrd=image / vmcontract.INITRD_FILE,
        rootfs=image / vmcontract.ROOTFS_FILE, data_disk=files.data_disk,
        console_log=files.console_log, qmp_socket=files.qmp_socket, pidfile=files.qemu_pid,
        guest_config=files.guest_config, ctl_socket=files.ctl_socket), agent.ssh_port,
        incoming=incoming)


def _resume_key(agent: Agent, host: HostInfo, image: Path, argv: list[str]) -> str | None:
    try:
        version = run([host.qemu_binary, "--version"], timeout=10)
        return resume.key_for_launch(agent.files, image, argv, agent.ssh_port, version)
    except (VmError, OSError, ValueError) as e:
        agent.report(State.STARTING, "no saved VM state this time (its key cannot be computed)",
                     str(e))
        return None


def _spawn(agent: Agent, config: VmConfig, argv: list[str], mode: Mode,
           launch: dict[str, Any]) -> None:
    files = agent.files
    for stale in (files.qemu_pid, files.qmp_socket, files.ctl_socket):
        stale.unlink(missing_ok=True)
    with files.qemu_log.open("ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
        log.flush()
        agent.qemu = Spawned(argv, log)
    agent.mode = mode
    values: dict[str, object] = {"ssh_port": agent.ssh_port, "qemu_pid": agent.qemu.pid,
                                 "agent_pid": os.getpid(), "accel": config.accel.value,
                                 "launched": time.time(), "start_mode": mode.value}
    if "accel_reason" in launch:
        values["accel_reason"] = launch["accel_reason"]
    agent.record_runtime(**values)
    agent.report(State.STARTING, f"QEMU started (pid {agent.qemu.pid}, {config.accel}, "
                                 f"{config.cpus} CPUs, {config.memory_mib} MiB"
                                 f"{', resuming' if mode is Mode.RESUMED else ''})")


def _wait_qmp(agent: Agent) -> None:
    deadline = time.monotonic() + QMP_WAIT
    while not agent.files.qmp_socket.exists():
        if not agent.qemu_alive():
            raise resume.ResumeError("QEMU exited at start")
        if time.monotonic() > deadline:
            raise resume.ResumeError(f"no QMP socket after {QMP_WAIT:g}s")
        time.sleep(0.02)


def _kill(agent: Agent) -> None:
    if agent.ctl is not None:
        agent.ctl.close()
        agent.ctl = None
    if agent.qemu is not None and agent.qemu.poll() is None:
        agent.qemu.kill()
        agent.qemu.wait(15)
