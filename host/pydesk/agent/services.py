"""The desktop services the agent runs while the guest is up: API socket, port forwarder, sync.

What it is for: once the guest API answers, :class:`DesktopServices` starts the host API socket
(``pydesk.proxy``: every Engine API call to the guest daemon, bind mounts rewritten to synced
guest copies by ``pydesk.sync``), the port forwarder (``pydesk.forward``: published guest ports
listen on the host through QEMU's user-mode network) and makes the docker context ``pydesk``.
They reach the guest over their own SSH connection (:class:`ChannelHolder`), reconnected when it
drops, so a guest daemon restart or a lost connection heals without restarting the agent.
What it must never do: expose the guest API on anything but the user's 0600 socket, or stop
containers: a stopping agent leaves the guest as it is (a new agent adopts it).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydesk.vm.errors import ChannelError

if TYPE_CHECKING:
    from pydesk.vm.channel import GuestChannel
    from pydesk.vm.instance import InstanceFiles

Report = Callable[[str, str], None]
"""(message, error): the agent turns it into a status line."""


class ChannelHolder:
    """One SSH connection for the services, made again on first use after it dropped."""

    def __init__(self, connect: Callable[[], GuestChannel]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._channel: GuestChannel | None = None

    def get(self) -> GuestChannel:
        with self._lock:
            if self._channel is None or not self._channel.active:
                if self._channel is not None:
                    self._channel.close()
                self._channel = None
                self._channel = self._connect()
            return self._channel

    def open_api(self) -> Any:
        """A socket-like stream to the guest daemon's API socket (a paramiko Channel)."""
        try:
            return self.get().open_unix()
        except ChannelError:
            # The connection may have died between the check and the open: once more.
            with self._lock:
                if self._channel is not None:
                    self._channel.close()
                self._channel = None
            return self.get().open_unix()

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None


def host_socket(files: InstanceFiles) -> Path:
    """The host API socket: ``<pydesk home>/run/docker.sock`` for the default instance (what
    the CLI's vm mode and the docker context use), ``run/<name>.sock`` for the others."""
    run = files.dir.parent / "run"
    return run / ("docker.sock" if files.name == "default" else f"{files.name}.sock")


class DesktopServices:
    """The API socket, the port forwarder and bind-mount sync of one running instance."""

    def __init__(self, files: InstanceFiles, connect: Callable[[], GuestChannel],
                 report: Report) -> None:
        self.files = files
        self.report = report
        self.holder = ChannelHolder(connect)
        self.stop_event = threading.Event()
        self.proxy: Any = None
        self.sync: Any = None
        self.forwarder_thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts what it can; each service that cannot start is reported, the others run."""
        from pydesk.forward.backend import QemuUserNetBackend
        from pydesk.forward.follower import PortForwarder
        from pydesk.proxy.server import ApiProxy, ProxySocketError
        from pydesk.sync.manager import SyncManager
        from pydesk.sync.transport import ssh_factory

        files = self.files
        self.sync = SyncManager(ssh_factory(lambda: self.holder.get().transport),
                                files.dir / "sync", self.report,
                                pydesk_home=files.dir.parent)  # never synced
        # After an agent restart: the roots synced before come back, sending only changes.
        resumed = 0
        with contextlib.suppress(Exception):
            resumed = self.sync.resume()
        if resumed:
            threading.Thread(target=self.report_resumed_sync, name="sync-resume-report",
                             daemon=True).start()
        forwarder = PortForwarder(self.holder.open_api, QemuUserNetBackend(files.qmp_socket),
                                  files.dir / "forwards.json", self.report)
        self.forwarder_thread = threading.Thread(target=forwarder.run, args=(self.stop_event,),
                                                 name="port-forwarder", daemon=True)
        self.forwarder_thread.start()
        socket_path = host_socket(files)
        try:
            self.proxy = ApiProxy(socket_path, self.holder.open_api, resolver=self.sync).start()
        except (ProxySocketError, OSError) as e:
            self.report(f"the host API socket {socket_path} could not be opened", str(e))
            return
        self.report(f"Docker API on unix://{socket_path} (docker --context pydesk, or "
                    f"DOCKER_HOST=unix://{socket_path})", "")
        if files.name == "default":
            self.ensure_docker_context(socket_path)

    def report_resumed_sync(self, timeout: float = 900.0) -> None:
        """Once the resumed sessions caught up: what each one had to send (only changes)."""
        waiting = time.monotonic() + timeout
        while not self.stop_event.wait(0.2) and time.monotonic() < waiting:
            sessions = self.sync.status()
            if all(s.state not in {"starting", "syncing"} for s in sessions):
                for s in sessions:
                    self.report(f"bind-mount sync of {s.host_root} resumed ({s.state}): "
                                f"{s.pushed} changed entries sent, {s.bytes_sent} bytes, "
                                f"{s.entries} entries in all", s.error)
                return

    def ensure_docker_context(self, socket_path: Path) -> None:
        """The docker CLI's context ``pydesk`` points at this socket (the current context of
        the user is never changed here: ``pydesk context docker --use`` does that)."""
        from pydesk.dockercontext import docker_config_dir, read_context, write_context

        host = f"unix://{socket_path}"
        try:
            config_dir = docker_config_dir()
            existing = read_context(config_dir)
            if existing is None or existing.host != host:
                write_context(config_dir, host)
        except OSError as e:
            self.report("the docker context pydesk could not be written", str(e))

    def stop(self, guest_alive: bool = True, timeout: float = 20.0) -> None:
        """Closes the socket, stops following and syncing; the guest keeps its containers.

        Bounded: the agent must reach its final report whatever a service does. With the
        guest gone (QEMU exited) the SSH connection is closed first, so nothing waits on it."""
        if not guest_alive:
            self.holder.close()
        stopper = threading.Thread(target=self._stop, name="services-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            self.report("the desktop services did not stop in time", f"after {timeout:g}s")
            self.holder.close()

    def _stop(self) -> None:
        self.stop_event.set()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.close()
        if self.forwarder_thread is not None:
            self.forwarder_thread.join(10)
        if self.sync is not None:
            with contextlib.suppress(Exception):
                self.sync.close()
        self.holder.close()
