"""The host agent's loop: launch QEMU, wait for the guest API, watch, power off on request.

What it is for: one agent process per running VM. It starts QEMU (cold boot, or a resume of the
saved VM state: ``pydesk.agent.launch``) or adopts the instance's QEMU left running by an agent
that was killed, keeps an SSH connection to the guest and pings pydeskd through it, and reports
every change as a status line (``pydesk.agent.status``). A stop request (the ``stop.request``
file, or SIGTERM) powers the guest off through ACPI and falls back to QMP ``quit`` after the
instance's stop timeout.
What it must never do: leave QEMU running when it exits on its own account, or say "running"
before /_ping answered through the channel, or connect to the guest's sshd before the guest
passed its snapshot point (a connection in flight would be saved with the VM's network state).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydesk.agent import launch as launching
from pydesk.agent.console import ConsoleWatch
from pydesk.agent.qemuproc import QemuProcess
from pydesk.agent.status import State, StatusEvent, append_status
from pydesk.vm.channel import GuestChannel
from pydesk.vm.config import VmConfig
from pydesk.vm.errors import ChannelError, VmError
from pydesk.vm.instance import InstanceFiles, ensure_keys, load_config, write_private
from pydesk.vm.qmp import Qmp, QmpError
from pydesk.vm.resume import CtlPort
from pydeskd import vmcontract

if TYPE_CHECKING:
    from pydesk.agent.services import DesktopServices

BOOT_TIMEOUT = 180.0
"""Seconds before a guest that does not answer is reported degraded (TCG on a busy host)."""
RESUME_TIMEOUT = 60.0
"""A resumed guest that does not answer in this long is given up: cold boot instead."""
BOOT_CONNECT_TIMEOUT = 4.0
PING_INTERVAL = 5.0
PING_FAILURES_BEFORE_DEGRADED = 2


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind((vmcontract.HOST_FORWARD_ADDRESS, 0))
        return int(s.getsockname()[1])


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"QEMU was killed (signal {-returncode}, {name})"
    return f"QEMU exited with status {returncode}"


class Agent:
    def __init__(self, files: InstanceFiles) -> None:
        self.files = files
        self.stop_event = threading.Event()
        self.state: State | None = None
        self.qemu: QemuProcess | None = None
        self.channel: GuestChannel | None = None
        self.ssh_port = 0
        self.services: DesktopServices | None = None
        self.mode = launching.Mode.COLD
        self.ctl: CtlPort | None = None
        self.released = True
        """False while a cold-booting guest has not passed its snapshot point (no go sent)."""
        self.save_key: str | None = None
        """The resume key to save the VM state under at the snapshot point (None: no save)."""
        self.resume_failed = False
        self.start_note = ""

    # --- reporting -------------------------------------------------------------------------

    def report(self, state: State, message: str, error: str = "") -> None:
        self.state = state
        append_status(self.files.status, StatusEvent.now(state, message, error))
        print(f"{time.strftime('%H:%M:%S')} {state}: {message}" + (f" ({error})" if error else ""),
              flush=True)

    def stop_requested(self) -> bool:
        return self.stop_event.is_set() or self.files.stop_request.exists()

    # --- launch ----------------------------------------------------------------------------

    def launch(self, config: VmConfig, launch: dict[str, Any]) -> None:
        launching.launch(self, config, launch)

    def record_runtime(self, **values: object) -> None:
        """Adds ``values`` to runtime.json (ssh port, pids, accelerator, seconds to ready)."""
        try:
            current = json.loads(self.files.runtime.read_text())
        except (OSError, ValueError):
            current = {}
        current.update(values)
        write_private(self.files.runtime, json.dumps(current).encode(), 0o644)

    def qemu_exit(self) -> int | None:
        assert self.qemu is not None
        return self.qemu.poll()

    def qemu_alive(self) -> bool:
        return self.qemu is not None and self.qemu.poll() is None

    def connect(self, timeout: float = 10) -> GuestChannel:
        keys = ensure_keys(self.files)
        return GuestChannel.connect(self.ssh_port, keys.client_private, keys.host_public_line,
                                    timeout=timeout)

    # --- phases ----------------------------------------------------------------------------

    def wait_ready(self, launched: float) -> bool:
        """Until /_ping answers through the channel (True), QEMU exits or a stop (False)."""
        degraded = False
        last_error = ""
        console = ConsoleWatch(self.files.console_log)
        while True:
            if self.qemu_exit() is not None or self.stop_requested():
                return False
            if not self.released or self.mode is launching.Mode.ADOPTED:
                launching.serve_ctl(self)  # the snapshot point: save (first start), then go
                if not self.released:
                    continue
            if self.mode is launching.Mode.RESUMED and \
                    time.monotonic() - launched > RESUME_TIMEOUT:
                self.resume_failed = True
                self.report(State.STARTING, f"the resumed guest did not answer in "
                                            f"{RESUME_TIMEOUT:.0f}s", last_error)
                return False
            failure = None if degraded else console.guest_failure()
            if failure is not None:
                # The guest gave up and said why: no point in waiting for the boot timeout.
                # Still watched: a pydeskd that comes up later makes the instance running.
                degraded = True
                self.report(State.DEGRADED, f"the guest gave up: {failure} (see pydesk vm "
                                            "logs, or pydesk vm ssh)", failure)
            try:
                if self.channel is None or not self.channel.active:
                    # Short: until the guest's network is up, slirp accepts the connection and
                    # the banner never comes; a stop request must not wait behind that.
                    self.channel = self.connect(timeout=BOOT_CONNECT_TIMEOUT)
                try:
                    answer = self.channel.http_get("/_ping", timeout=10)
                except ChannelError as e:  # SSH works, the daemon's socket is not there yet
                    answer = (0, e.message.encode())
                if answer == (200, b"OK"):
                    took = time.monotonic() - launched
                    self.record_runtime(ready_seconds=round(took, 3))
                    self.report(State.RUNNING, f"{self.start_note}guest API ready in "
                                               f"{took:.1f}s (ssh on 127.0.0.1:{self.ssh_port})")
                    return True
                last_error = ("the guest daemon does not answer /_ping yet: "
                              + answer[1][:200].decode(errors="replace"))
            except ChannelError as e:
                if isinstance(e, VmError) and "host key" in e.message:
                    self.report(State.DEGRADED, "the guest's host key is not the pinned one",
                                e.message)
                    return False
                last_error = e.message
                if self.channel is not None:
                    self.channel.close()
                    self.channel = None
            if not degraded and time.monotonic() - launched > BOOT_TIMEOUT:
                degraded = True
                self.report(State.DEGRADED, f"the guest did not answer in {BOOT_TIMEOUT:.0f}s "
                                            "(see pydesk vm logs)", last_error)
            self.stop_event.wait(0.25)

    def watch(self) -> None:
        """While running: ping every PING_INTERVAL, report degraded/running changes."""
        failures = 0
        next_ping = time.monotonic() + PING_INTERVAL
        while self.qemu_exit() is None and not self.stop_requested():
            self.stop_event.wait(0.2)
            if time.monotonic() < next_ping:
                continue
            next_ping = time.monotonic() + PING_INTERVAL
            error = ""
            try:
                if self.channel is None or not self.channel.active:
                    self.channel = self.connect()
                ok = self.channel.ping(timeout=10)
                error = "" if ok else "the guest daemon does not answer /_ping"
            except ChannelError as e:
                ok, error = False, e.message
                self.channel = None
            if ok:
                failures = 0
                if self.state is State.DEGRADED:
                    self.report(State.RUNNING, "the guest API answers again")
            else:
                failures += 1
                if failures >= PING_FAILURES_BEFORE_DEGRADED and self.state is State.RUNNING:
                    self.report(State.DEGRADED, "the guest API does not answer", error)

    def power_off(self, timeout: float) -> None:
        """ACPI power-down, QEMU quit after ``timeout``, kill as the last resort."""
        assert self.qemu is not None
        if self.qemu.poll() is not None:
            return
        self.report(State.STOPPING, f"ACPI power-down (quit after {timeout:g}s)")
        qmp = Qmp(self.files.qmp_socket)
        try:
            qmp.system_powerdown()
        except QmpError as e:
            self.report(State.STOPPING, "QMP power-down failed, quitting QEMU", e.message)
        try:
            self.qemu.wait(timeout)
            return
        except TimeoutError:
            pass
        self.report(State.STOPPING, f"the guest did not power off in {timeout:g}s: QMP quit")
        with contextlib.suppress(QmpError):
            qmp.quit()  # QEMU flushes and closes its disks before it exits
        try:
            self.qemu.wait(15)
        except TimeoutError:
            self.qemu.kill()
            self.qemu.wait()

    def requested_grace(self, default: float) -> float:
        """The stop request's timeout (``pydesk vm stop --timeout``), else the instance's."""
        try:
            return float(self.files.stop_request.read_text().strip())
        except (OSError, ValueError):
            return default

    def console_says(self, line: str) -> bool:
        try:
            return line.encode() in self.files.console_log.read_bytes()
        except OSError:
            return False

    def final_report(self, stop_was_requested: bool) -> None:
        assert self.qemu is not None
        code = self.qemu.wait()
        clean = self.console_says(vmcontract.GUEST_SERIAL_POWEROFF)
        if code < 0 and not stop_was_requested:
            reason = exit_reason(code)
            self.report(State.STOPPED, reason, reason)
        elif code == 0 and clean:
            self.report(State.STOPPED, "the guest powered off cleanly")
        elif code == 0 and stop_was_requested:
            self.report(State.STOPPED, "QEMU quit before the guest powered off",
                        "the guest did not power off in time (data disk flushed by QEMU)")
        elif code == 0:
            self.report(State.STOPPED, "the guest shut down or panicked (see pydesk vm logs)",
                        "the guest stopped without a stop request")
        else:
            reason = exit_reason(code)
            self.report(State.STOPPED, reason, f"{reason}: {self.last_qemu_error()}")

    def last_qemu_error(self) -> str:
        try:
            lines = self.files.qemu_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines and not lines[-1].startswith("---") else ""

    # --- the whole life ---------------------------------------------------------------------

    def run(self) -> int:
        files = self.files
        files.stop_request.unlink(missing_ok=True)
        write_private(files.agent_pid, f"{os.getpid()}\n".encode(), 0o644)
        try:
            config = load_config(files)
            launch = json.loads(files.launch.read_text())
            launched = time.monotonic()
            self.launch(config, launch)
        except (VmError, OSError, ValueError) as e:
            message = e.message if isinstance(e, VmError) else str(e)
            self.report(State.STOPPED, "QEMU could not start", message)
            self.cleanup()
            return 1
        try:
            ready = self.wait_ready(launched)
            if not ready and self.resume_failed and not self.stop_requested():
                launching.cold_boot_after_failed_resume(self, config, launch)
                ready = self.wait_ready(launched)
            if ready:
                self.start_services()
                self.watch()
            self.stop_services()
            stop_was_requested = self.stop_requested()
            grace = self.requested_grace(config.stop_timeout)
            # Also when QEMU still runs without a stop request (host key mismatch): an agent
            # never leaves a QEMU behind that nobody watches.
            if stop_was_requested or self.qemu_exit() is None:
                self.power_off(grace)
            self.final_report(stop_was_requested)
        except BaseException as e:
            if self.qemu is not None and self.qemu.poll() is None:
                self.qemu.kill()
                self.qemu.wait()
            self.report(State.STOPPED, "the agent failed", f"{type(e).__name__}: {e}")
            raise
        finally:
            self.cleanup()
        return 0

    def start_services(self) -> None:
        """The host API socket, the port forwarder and bind-mount sync (``services``)."""
        from pydesk.agent.services import DesktopServices

        self.services = DesktopServices(self.files, self.connect, self.service_report)
        try:
            self.services.start()
        except Exception as e:  # the VM still runs: say what is missing, keep watching
            self.service_report("the desktop services could not start",
                                f"{type(e).__name__}: {e}")

    def service_report(self, message: str, error: str) -> None:
        """A service's message as a status line; the instance's state does not change."""
        self.report(self.state or State.RUNNING, message, error)

    def stop_services(self) -> None:
        services, self.services = self.services, None
        if services is not None:
            services.stop(guest_alive=self.qemu_alive())

    def cleanup(self) -> None:
        self.stop_services()
        if self.channel is not None:
            self.channel.close()
        if self.ctl is not None:
            self.ctl.close()
        for path in (self.files.runtime, self.files.qmp_socket, self.files.stop_request,
                     self.files.agent_pid, self.files.qemu_pid, self.files.ctl_socket):
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pydesk.agent")
    parser.add_argument("--instance-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    # paramiko logs every failed connection attempt with a traceback; the agent retries those
    # by design and reports what matters in status lines.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    agent = Agent(InstanceFiles(args.instance_dir))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop_event.set())
    if sys.platform != "win32":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return agent.run()
