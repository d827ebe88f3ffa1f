"""ContainerService: the lifecycle of containers -- create, start, stop, kill, wait, remove,
pause, rename, restart policies and live restore -- over images, snapshots, shims and a runtime.

What it is for: the one object the API routes call for containers. ``create`` resolves the
image (never pulls: the API layer does that for the CLI), unpacks it, prepares the container's
ACTIVE snapshot (key = container ID) and writes its record; ``start`` mounts the snapshot at
``<exec-root>/containers/<id>/rootfs``, writes the bundle's config.json, starts a shim
(``<exec-root>/s/<id>``, short enough for a unix socket path) and the process, and a monitor
thread per container waits for the exit, records it, runs the restart policy and AutoRemove.
``restore`` at daemon start finds running containers again through their shims.

Locking: each container has one re-entrant lock (the store's), and one Condition over it that
every waiter uses; state changes happen under it, blocking calls (shim waits, sleeps) outside.

What it must never do: leave a mount, a shim or a snapshot behind a container it removed, or
block one container's calls on another's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydeskd.containerd import oci
from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.containerd.image_content import image_manifests
from pydeskd.containerd.reference import parse_reference
from pydeskd.containerd.service import ImageService
from pydeskd.containerd.snapshots import mount as snapmount
from pydeskd.daemon.config_types import Config, entrypoint_and_args, merge_image_config
from pydeskd.daemon.containers import cgroupfs, files, health, listing, streams
from pydeskd.daemon.containers import monitor as monitor_mod
from pydeskd.daemon.containers import restore as restore_mod
from pydeskd.daemon.containers.attach import Attachment
from pydeskd.daemon.containers.context import (
    EventPublisher,
    Live,
    ServicePaths,
    api_json,
    parse_size,
)
from pydeskd.daemon.containers.errors import (
    CommandNotRunnable,
    Conflict,
    NotModified,
    StartFailed,
)
from pydeskd.daemon.containers.execs import Execs
from pydeskd.daemon.containers.filters import ListOptions
from pydeskd.daemon.containers.mounts import Resolved, resolve
from pydeskd.daemon.containers.names import generate_name, new_id
from pydeskd.daemon.containers.ocibridge import docker_spec
from pydeskd.daemon.containers.record import Container
from pydeskd.daemon.containers.restart import RestartManager, RestartPolicy
from pydeskd.daemon.containers.signals import parse_signal
from pydeskd.daemon.containers.spec import BundleInputs
from pydeskd.daemon.containers.state import now
from pydeskd.daemon.containers.store import ContainerStore, remove_tree
from pydeskd.daemon.logs import LogEntry, LogOptions
from pydeskd.daemon.volumes import VolumeService
from pydeskd.daemon.volumes.fill import mounted_rootfs
from pydeskd.daemon.volumes.service import users_from_records
from pydeskd.network.model import SandboxInfo
from pydeskd.network.service import NetworkService
from pydeskd.network.views import row_matches
from pydeskd.shim.client import ShimClient, ShimStartError, start_shim
from pydeskd.shim.paths import atomic_write
from pydeskd.shim.protocol import ErrorKind, ProtocolError, ShimError

log = logging.getLogger(__name__)

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
ID_PREFIX = re.compile(r"(sha256:)?[0-9a-f]{1,64}")  # an image ID or a prefix of one
KILL_GRACE = 30.0          # after SIGKILL, how long an exit may take before stop gives up
KILL_WAIT = 10.0           # docker kill: how long it waits for the exit before a direct kill
ATTACH_GRACE = 2.0         # how long start waits for attachers that are connecting


class ContainerService:
    def __init__(self, images: ImageService, events: EventPublisher, paths: ServicePaths,
                 volumes: VolumeService | None = None,
                 mounter: snapmount.Mounter | None = None, *,
                 network: NetworkService | None = None) -> None:
        self.images = images
        # None: containers get a network namespace of their own with no interface beyond lo
        # (the runtime's), as before the network layer existed (unit tiers use this).
        self.network = network
        self.events = events
        self.paths = paths
        self.volumes = volumes or VolumeService(paths.data_root / "volumes", events,
                                                durable=paths.durable, mounter=mounter)
        self.mounter = mounter
        self.store = ContainerStore(paths.containers, durable=paths.durable)
        # Which container uses which volume is read from the records (survives restarts).
        self.volumes.set_users(lambda: users_from_records(self.store.all()))
        self._live: dict[str, Live] = {}
        self._conds: dict[str, threading.Condition] = {}
        self._table = threading.Lock()
        self.closed = False
        self.execs = Execs(self)
        if network is not None:
            network.bind_containers(self)
        for d in (paths.exec_root / "containers", paths.exec_root / "s", paths.runtime_state):
            d.mkdir(parents=True, exist_ok=True)

    # --- plumbing -------------------------------------------------------------------------

    def condition(self, cid: str) -> threading.Condition:
        with self._table:
            cond = self._conds.get(cid)
            if cond is None:
                cond = self._conds[cid] = threading.Condition(self.store.lock(cid))
            return cond

    def live(self, c: Container) -> Live:
        """The live part of ``c``; for a container removed meanwhile (its record gone from
        the store) a detached Live marked removed, so a waiter that looked it up just before
        the removal sees it removed instead of waiting forever on a fresh entry."""
        with self._table:
            live = self._live.get(c.id)
            if live is None:
                policy = RestartPolicy.from_api(c.host_config.get("RestartPolicy"))
                if not self.store.exists(c.id):
                    return Live(RestartManager(policy), removed=True)
                live = self._live[c.id] = Live(RestartManager(policy))
            return live

    def publish(self, c: Container, action: str, **extra: str) -> None:
        attrs = {"name": c.name.lstrip("/"), "image": c.image_name, **c.labels, **extra}
        with contextlib.suppress(Exception):  # an event bus failure never fails the call
            self.events.publish("container", action, c.id, attrs)

    def get(self, ref: str) -> Container:
        return self.store.get(ref)

    def close(self) -> None:
        """Stops following containers (they keep running: live restore finds them again)."""
        self.closed = True
        with self._table:
            lives = list(self._live.values())
        for live in lives:
            live.stop_prober()

    # --- create ---------------------------------------------------------------------------

    def create(self, name: str | None, config: Any, host_config: Any = None,
               platform: oci.Platform | None = None,
               networking: Mapping[str, Any] | None = None) -> Container:
        """A new container in state created. Raises NotFound ("No such image: X", "network X
        not found"), InvalidArgument (bad name, no command, bad mounts, policy or network
        settings), Conflict (name taken)."""
        cfg, host = api_json(config), api_json(host_config)
        image_ref = cfg.get("Image") or ""
        if not image_ref:
            raise InvalidArgument("config cannot be empty in order to create a container")
        policy = RestartPolicy.from_api(host.get("RestartPolicy"))
        if host.get("AutoRemove") and policy.name != "no":
            raise InvalidArgument("conflicting options: cannot specify both --restart and --rm")
        try:
            image = self.images.resolve(image_ref)
        except NotFound:
            # As dockerd (GetImage parses first): a malformed reference is the client's
            # error (400 "invalid reference format..."), not a missing image.
            if not ID_PREFIX.fullmatch(image_ref):
                parse_reference(image_ref)
            raise
        matcher = oci.PlatformMatcher(platform or self.images.platform)
        _, _, image_config = image_manifests(self.images.stores.content, image.target, matcher)
        # Docker stores the Config merged with the image's (inspect shows the result).
        typed = merge_image_config(Config.from_api(cfg), image_config.config)
        path, args = entrypoint_and_args(typed)
        cid = new_id()
        # As dockerd: a container on the host's network is named after the host by default.
        default_hostname = socket.gethostname() if host.get("NetworkMode") == "host" \
            else cid[:12]
        merged = replace(typed, hostname=typed.hostname or default_hostname).to_api()
        stored = self._reserve(name, cid)
        cdir = self.store.dir(cid)
        try:
            chain = self.images.unpack(image.target, platform)
            cdir.mkdir(parents=True)
            self.images.stores.snapshotter.prepare(cid, chain)
            try:
                plan = resolve(merged, host, self.volumes, ref=cid)
                # New volumes over image content are filled with it first, as Docker does.
                self.volumes.populate(cid, plan.mounts, functools.partial(
                    mounted_rootfs, self.images.stores.snapshotter.mounts(cid),
                    self.paths.rootfs(cid), self.mounter))
                record = Container(
                    id=cid, name=stored, created=now(), path=path, args=list(args), config=merged,
                    host_config=host, image=image.id, image_name=image_ref,
                    log_path=str(cdir / f"{cid}-json.log"),
                    resolv_conf_path=str(cdir / "resolv.conf"),
                    hostname_path=str(cdir / "hostname"), hosts_path=str(cdir / "hosts"),
                    mounts=[m.inspect() for m in plan.mounts],
                    resolved_mounts=[m.to_json() for m in plan.mounts], snapshot_key=cid)
                if self.network is not None:
                    self.network.register(cid, stored, host, networking)
                self._write_etc(record)
                self.store.add(record)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.images.stores.snapshotter.remove(cid)
                if self.network is not None:
                    with contextlib.suppress(Exception):
                        self.network.forget(cid)
                raise
        except BaseException:
            self.store.release_name(stored, cid)
            remove_tree(cdir)
            self.volumes.release(cid)
            raise
        self.live(record)
        self.publish(record, "create")
        return record

    def _reserve(self, name: str | None, cid: str) -> str:
        if name:
            return self.store.reserve_name(name, cid)
        for retry in range(10):
            candidate = generate_name(retry)
            with contextlib.suppress(Conflict):
                return self.store.reserve_name(candidate, cid)
        return self.store.reserve_name(cid[:12], cid)

    def _write_etc(self, c: Container, sandbox: SandboxInfo | None = None) -> None:
        """/etc/hostname, /etc/hosts (with the address of the container's first network,
        once started) and /etc/resolv.conf (only the embedded resolver on the gateway of a user
        network, which forwards to the container's --dns servers; the host's filtered file
        otherwise)."""
        host = c.host_config
        hostname = c.config.get("Hostname") or c.short_id
        extra = [str(e) for e in host.get("ExtraHosts") or []]
        address, names = "", tuple[str, ...]()
        if sandbox is not None:
            extra = [e.replace("host-gateway", sandbox.gateway) if sandbox.gateway else e
                     for e in extra]
            if sandbox.hosts:
                address, names = sandbox.hosts[0]
        if sandbox is not None:
            # --link: the linked containers' lines (after the container's own).
            extra += [f"{n}:{ip}" for ip, more in sandbox.hosts[1:] for n in more]
        files.write_file(Path(c.hostname_path), files.hostname_file(hostname))
        hosts = files.hosts_file(hostname, extra, address, names)
        if sandbox is not None and sandbox.host_mode:
            hosts = files.host_hosts_file(extra)  # the host's own, as dockerd copies it
        files.write_file(Path(c.hosts_path), hosts)
        dns = [str(d) for d in host.get("Dns") or []]
        if sandbox is not None and sandbox.nameservers:
            # Only the embedded resolver: its NXDOMAIN would be final, so a --dns server
            # listed after it would never be asked; the resolver forwards to them instead.
            dns = list(sandbox.nameservers)
        files.write_file(Path(c.resolv_conf_path), files.resolv_conf(
            files.host_resolv_conf(), dns, host.get("DnsSearch") or [],
            host.get("DnsOptions") or []))

    # --- start ----------------------------------------------------------------------------

    def start(self, ref: str) -> None:
        """Raises NotModified (already running), Conflict (paused, being removed),
        CommandNotRunnable / StartFailed (the runtime refused; recorded in State.Error)."""
        c = self.get(ref)
        with self.condition(c.id):
            if c.state.is_running:
                raise NotModified(f"container {c.id} is already running")
            c.state.check_can_start(c.name)
            c.manually_stopped = False
            live = self.live(c)
            live.restart = RestartManager(live.restart.policy)
            self.start_locked(c, live)

    def start_locked(self, c: Container, live: Live) -> None:
        cond = self.condition(c.id)
        bundle, rootfs = self.paths.bundle(c.id), self.paths.rootfs(c.id)
        state_dir = self.paths.shim_state(c.id)
        try:
            self.clear_task(c)
            rootfs.mkdir(parents=True, exist_ok=True)
            mounts = self.images.stores.snapshotter.mounts(c.snapshot_key)
            snapmount.perform(mounts, rootfs, self.mounter)
            try:
                self.volumes.mounted(c.id, [Resolved.from_json(m) for m in c.resolved_mounts])
                netns = ""
                if self.network is not None:
                    sandbox = self.network.attach(c.id, c.config.get("Hostname") or c.short_id,
                                                  c.host_config, c.config, c.name)
                    self._write_etc(c, sandbox)
                    netns = sandbox.netns
                spec = docker_spec(replace(self.bundle_inputs(c), netns_path=netns),
                                   self.paths.cgroup_parent, self.paths.init_path)
                c.cgroups_path = str(spec.get("linux", {}).get("cgroupsPath") or "")
                atomic_write(bundle / "config.json", spec, durable=False)
                log = (c.host_config.get("LogConfig") or {}).get("Config") or {}
                shim = start_shim(
                    c.id, bundle, state_dir, runtime=self.paths.runtime_path,
                    runtime_root=self.paths.runtime_state,
                    stdin=bool(c.config.get("OpenStdin")), log_path=Path(c.log_path),
                    log_max_size=parse_size(str(log.get("max-size") or "0")),
                    log_max_files=int(log.get("max-file") or 1))
                live.generation += 1
                live.shim = shim
                cond.notify_all()  # attachers waiting for the shim connect now
                deadline = time.monotonic() + ATTACH_GRACE
                while live.attach_pending > 0 and time.monotonic() < deadline:
                    cond.wait(0.02)
                started = shim.start()
            except BaseException:
                self.clear_task(c)
                raise
        except (ShimStartError, ShimError, OSError, ProtocolError, InvalidArgument) as err:
            message = str(err)
            code = 127 if "not found" in message or "no such file" in message.lower() else (
                126 if "permission denied" in message.lower() else 128)
            c.state.exit_code = code
            c.state.set_error(message)
            self.store.save(c)
            live.shim = None
            # Whoever waits for this start (attachers, next-exit waiters) hears it failed.
            live.generation += 1
            live.exits += 1
            cond.notify_all()
            if c.host_config.get("AutoRemove"):  # as dockerd: a failed --rm start removes it
                threading.Thread(target=monitor_mod.auto_remove, args=(self, c.id),
                                 daemon=True).start()
            if code in (126, 127):
                raise CommandNotRunnable(f"failed to create task for container: {message}"
                                         ) from None
            raise StartFailed(f"failed to create task for container: {message}") from None
        c.state.set_running(started.pid)
        c.has_been_started = True
        live.stop_prober()
        settings = health.Settings.from_config(c.config.get("Healthcheck"))
        c.state.health = health.initial() if settings is not None else None
        self.store.save(c)
        if settings is not None:
            live.prober = health.Prober(self, c, shim, settings)
            live.prober.start()
        live.started_mono = time.monotonic()
        monitor = threading.Thread(target=self.monitor, args=(c.id, shim, live.generation),
                                   name=f"monitor-{c.short_id}", daemon=True)
        live.monitors = [t for t in live.monitors if t.is_alive()] + [monitor]
        monitor.start()
        self.publish(c, "start")

    def cgroups_path(self, c: Container) -> str:
        return c.cgroups_path or self.paths.cgroups_path(c.id)

    def bundle_inputs(self, c: Container) -> BundleInputs:
        return BundleInputs(
            cid=c.id, config=c.config, host_config=c.host_config,
            rootfs=self.paths.rootfs(c.id),
            mounts=[Resolved.from_json(m) for m in c.resolved_mounts],
            hostname_path=c.hostname_path,
            hosts_path=c.hosts_path, resolv_conf_path=c.resolv_conf_path)

    def clear_task(self, c: Container) -> None:
        """Whatever a previous run left: its shim (deleted), the runtime's state, the rootfs
        mount. Safe to call when nothing is there."""
        state_dir = self.paths.shim_state(c.id)
        if (state_dir / "shim.sock").exists():
            client = ShimClient.for_state_dir(state_dir, timeout=10)
            with contextlib.suppress(Exception):
                client.kill(signal.SIGKILL)
            with contextlib.suppress(Exception):
                client.wait(timeout=10)
            with contextlib.suppress(Exception):
                client.delete()
        if state_dir.exists():
            self._runtime("delete", "--force", c.id)
            remove_tree(state_dir)
        with contextlib.suppress(OSError):
            snapmount.unmount(self.paths.rootfs(c.id), self.mounter)
        self.volumes.unmounted(c.id)
        if self.network is not None:
            self.network.detach(c.id)

    def _runtime(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The one place the daemon runs the OCI runtime itself (pause, resume, cleanup)."""
        argv = [str(self.paths.runtime_path), "--root", str(self.paths.runtime_state), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    # --- exits (monitor.py) ---------------------------------------------------------------

    def monitor(self, cid: str, shim: ShimClient, generation: int) -> None:
        """Thread body: follows one run of a container to its exit (see :mod:`.monitor`)."""
        monitor_mod.follow(self, cid, shim, generation)

    def exit_from_disk(self, cid: str) -> tuple[int, str | None]:
        return monitor_mod.exit_from_disk(self.paths.shim_state(cid))

    # --- stop / kill / restart ------------------------------------------------------------

    def _wait_exit(self, c: Container, live: Live, exits_before: int,
                   timeout: float | None) -> bool:
        cond = self.condition(c.id)
        with cond:
            return cond.wait_for(lambda: live.exits > exits_before or not c.state.is_running,
                                 timeout)

    def _send(self, c: Container, shim: ShimClient, sig: int) -> None:
        try:
            shim.kill(sig, all=False)
        except ShimError as err:
            if err.kind is ErrorKind.CONFLICT:
                return  # it has just exited: the monitor is recording it
            raise Conflict(f"Cannot kill container: {c.id}: {err.message}") from None
        except OSError:
            return  # the shim is gone: the monitor records the exit
        self.publish(c, "kill", signal=str(sig))
        if c.state.paused and sig == signal.SIGKILL:
            self._runtime("resume", c.id)

    def stop(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        """``docker stop``: StopSignal (or ``sig``), then SIGKILL after ``timeout`` seconds
        (StopTimeout, default 10; -1 waits forever). Raises NotModified when not running."""
        c = self.get(ref)
        with self.condition(c.id):
            live = self.live(c)
            live.restart.cancel()
            c.manually_stopped = True
            if c.state.restarting:
                c.state.set_stopped(c.state.exit_code, c.state.finished_at)
                self.store.save(c)
                live.exits += 1
                self.condition(c.id).notify_all()
                self.publish(c, "stop")
                return
            if not c.state.is_running or live.shim is None:
                self.store.save(c)
                raise NotModified(f"container {c.id} is already stopped")
            self.store.save(c)
            number = parse_signal(sig or c.config.get("StopSignal"), signal.SIGTERM)
            if timeout is None:
                stop_timeout = c.config.get("StopTimeout")
                timeout = 10 if stop_timeout is None else int(stop_timeout)
            exits, shim = live.exits, live.shim
        self._send(c, shim, number)
        if not self._wait_exit(c, live, exits, None if timeout < 0 else float(timeout)):
            self._send(c, shim, signal.SIGKILL)
            if not self._wait_exit(c, live, exits, KILL_GRACE):
                raise StartFailed(f"cannot stop container: {c.id}: tried to kill container, "
                                  f"but did not receive an exit event")
        self.publish(c, "stop")

    def kill(self, ref: str, sig: str | int | None = None) -> None:
        """``docker kill``. Raises Conflict when not running, InvalidArgument (bad signal)."""
        c = self.get(ref)
        number = parse_signal(sig, signal.SIGKILL)
        with self.condition(c.id):
            live = self.live(c)
            # moby's killWithSignal: the kill ends the restart policy (ExitOnNext) unless the
            # container names a StopSignal and this is neither it nor SIGKILL; any kill counts
            # as a manual stop (unless-stopped).
            configured = c.config.get("StopSignal")
            exit_on_next = (not configured or number == signal.SIGKILL
                            or parse_signal(configured, signal.SIGTERM) == number)
            if c.state.restarting:
                # Waiting to restart: no process to signal; telling it not to come back is all.
                if exit_on_next:
                    live.restart.cancel()
                    c.manually_stopped = True
                    c.state.set_stopped(c.state.exit_code, c.state.finished_at)
                    self.store.save(c)
                    live.exits += 1
                    self.condition(c.id).notify_all()
                return
            if not c.state.is_running or live.shim is None:
                raise Conflict(f"Cannot kill container: {ref}: container {c.id} is not "
                               f"running")
            if exit_on_next:
                live.restart.cancel()
            c.manually_stopped = True
            self.store.save(c)
            shim, exits, pid = live.shim, live.exits, c.state.pid
        self._send(c, shim, number)
        if number != signal.SIGKILL:
            return
        # moby's Kill: a SIGKILL returns once the container is down, so that `docker kill`
        # then `docker rm` works; after KILL_WAIT the init is killed directly, once more.
        if self._wait_exit(c, live, exits, KILL_WAIT):
            return
        log.warning("container %s did not exit within %s s of SIGKILL; killing %d directly",
                    c.id, KILL_WAIT, pid)
        with contextlib.suppress(OSError):
            if pid > 0:
                os.kill(pid, signal.SIGKILL)
        if not self._wait_exit(c, live, exits, KILL_GRACE):
            raise StartFailed(f"Cannot kill container: {c.id}: tried to kill container, but "
                              f"did not receive an exit event")

    def restart(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.get(ref)
        with contextlib.suppress(NotModified):
            self.stop(c.id, timeout, sig)
        self.start(c.id)
        self.publish(c, "restart")

    # --- wait -----------------------------------------------------------------------------

    def wait(self, ref: str, condition: str = "not-running",
             timeout: float | None = None) -> tuple[int, str]:
        """Blocks until ``condition``; (exit code, error message). Raises InvalidArgument
        (unknown condition), NotFound, TimeoutError (after ``timeout``)."""
        return self.waiter(ref, condition)(timeout)

    def waiter(self, ref: str, condition: str = "not-running"
               ) -> Callable[[float | None], tuple[int, str]]:
        """The first half of ``wait``: resolves the container and takes the baseline now
        (next-exit counts exits from here), returns the blocking half. The API answers the
        CLI (which then starts the container) only after this, so a run that ends and is
        removed at once is still seen. Raises InvalidArgument, NotFound."""
        if not condition:
            condition = "not-running"
        if condition not in WAIT_CONDITIONS:
            raise InvalidArgument(f"invalid condition: \"{condition}\"")
        c = self.get(ref)
        cond = self.condition(c.id)
        with cond:
            live = self.live(c)
            exits = live.exits
        if condition == "not-running":
            def done() -> bool:
                return not c.state.running or live.removed
        elif condition == "next-exit":
            def done() -> bool:
                return live.exits > exits or live.removed
        else:
            def done() -> bool:
                return live.removed

        def block(timeout: float | None) -> tuple[int, str]:
            with cond:
                if not cond.wait_for(done, timeout):
                    raise TimeoutError(f"container {c.id}: still waiting for {condition}")
                return c.state.exit_code, c.state.error
        return block

    # --- remove ---------------------------------------------------------------------------

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """``docker rm``. Raises Conflict (running without force, removal in progress)."""
        c = self.get(ref)
        with self.condition(c.id):
            live = self.live(c)
            if c.state.removal_in_progress:
                raise Conflict(f"removal of container {c.id} is already in progress")
            if c.state.running and not force:
                raise Conflict(f'cannot remove container "{c.name}": container is running: '
                               f'stop the container before removing or force remove')
            live.restart.cancel()
            shim, exits = live.shim, live.exits
            running = c.state.is_running and shim is not None
            c.state.set_removing()
            self.store.save(c)
        if running and shim is not None:
            self._send(c, shim, signal.SIGKILL)
            self._wait_exit(c, live, exits, KILL_GRACE)
        cond = self.condition(c.id)
        with cond:
            live.generation += 1  # a late monitor of this run does nothing
            live.stop_prober()
            self.clear_task(c)
            live.shim = None
            remove_tree(self.paths.bundle(c.id))
            with contextlib.suppress(NotFound):
                self.images.stores.snapshotter.remove(c.snapshot_key)
            self.store.delete(c)
            if self.network is not None:
                self.network.forget(c.id)
            # rm -v: its anonymous volumes go too (unless another container uses them).
            self.volumes.release(c.id, [str(m["name"]) for m in c.resolved_mounts if volumes
                                        and m.get("anonymous") and m.get("type") == "volume"])
            live.removed = True
            cond.notify_all()
        with self._table:
            self._live.pop(c.id, None)
        self.execs.forget_container(c.id)
        self.publish(c, "destroy")

    # --- pause / rename -------------------------------------------------------------------

    def pause(self, ref: str) -> None:
        self._set_paused(ref, True)

    def unpause(self, ref: str) -> None:
        self._set_paused(ref, False)

    def _set_paused(self, ref: str, paused: bool) -> None:
        """``docker pause`` / ``unpause``: the runtime freezes or thaws the cgroup."""
        c = self.get(ref)
        verb, command = ("pause", "pause") if paused else ("unpause", "resume")
        with self.condition(c.id):
            if paused:
                c.state.check_can_pause(c.id)
            else:
                c.state.check_can_unpause(c.id)
            done = self._runtime(command, c.id)
            if done.returncode != 0:
                raise StartFailed(f"Cannot {verb} container {c.id}: {done.stderr.strip()}")
            c.state.set_paused(paused)
            self.store.save(c)
        self.publish(c, verb)

    def rename(self, ref: str, new_name: str) -> None:
        """Raises Conflict (name taken), InvalidArgument (bad name or the same name)."""
        c = self.get(ref)
        with self.condition(c.id):
            old = c.name
            if new_name.lstrip("/") == old.lstrip("/"):
                raise InvalidArgument("Renaming a container with the same name as its current "
                                      "name")
            self.store.rename(c, new_name)
            if self.network is not None:
                self.network.rename(c.id, c.name)
        self.publish(c, "rename", oldName=old)

    # --- restore, attach, logs (restore.py, streams.py) ----------------------------------

    def restore(self) -> list[Container]:
        """At daemon start (see :func:`.restore.restore`)."""
        return restore_mod.restore(self)

    def reserve_attach(self, ref: str) -> streams.Reservation:
        """Before answering an attach: the next start waits for this attacher."""
        return streams.reserve(self, ref)

    def release_attach(self, reservation: streams.Reservation) -> None:
        streams.release(self, reservation)

    def attach(self, ref: str, *, stdin: bool = False, stdout: bool = True,
               stderr: bool = True, timeout: float | None = None,
               reservation: streams.Reservation | None = None) -> Attachment:
        """The live streams of a container (see :func:`.streams.attach`)."""
        return streams.attach(self, ref, stdin=stdin, stdout=stdout, stderr=stderr,
                              timeout=timeout, reservation=reservation)

    def logs(self, ref: str, options: LogOptions,
             stop: threading.Event | None = None) -> Iterator[LogEntry]:
        """``docker logs`` (see :func:`.streams.logs`)."""
        return streams.logs(self, ref, options, stop)

    # --- exec, listing (see execs.py, listing.py) ----------------------------------------

    def exec_create(self, ref: str, cmd: Sequence[str], **kwargs: Any) -> str:
        return self.execs.create(ref, cmd, **kwargs)

    def exec_start(self, exec_id: str, detach: bool = False,
                   tty: bool | None = None) -> Attachment | None:
        return self.execs.start(exec_id, detach, tty)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return self.execs.inspect(exec_id)

    def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        self.execs.resize(exec_id, height, width)

    def resize(self, ref: str, height: int, width: int) -> None:
        c = self.get(ref)
        shim = self.live(c).shim
        if shim is None or not c.state.is_running:
            raise Conflict(f"Container {c.id} is not running")
        try:
            shim.resize(width, height)
        except ShimError as err:
            raise Conflict(err.message) from None

    def inspect(self, ref: str, size: bool = False) -> dict[str, Any]:
        c = self.get(ref)
        with self.store.lock(c.id):
            out = c.to_inspect(*listing.sizes(self, c)) if size else c.to_inspect()
        if self.network is not None:
            out["NetworkSettings"] = self.network.settings(c.id, c.config)
        return out

    def list(self, options: ListOptions, size: bool = False) -> list[dict[str, Any]]:
        rows = listing.list_containers(self, options, size)
        if self.network is not None:
            for row in rows:
                c = self.store.find(row["Id"])
                if c is not None:
                    row["Ports"], row["NetworkSettings"] = self.network.summary(c.id, c.config)
            # The filters that need the network layer (listing accepts and leaves them).
            if {"network", "publish", "expose"} & set(options.filters or {}):
                rows = [r for r in rows if row_matches(r, options.filters or {})]
        return rows

    def top(self, ref: str, ps_args: str = "") -> dict[str, Any]:
        return listing.top(self, ref, ps_args)

    def stats(self, ref: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
        sample = listing.stats(self, ref, previous)
        if self.network is not None:
            c = self.get(ref)
            networks = cgroupfs.network_stats(self.network.interfaces(c.id))
            if networks:
                sample["networks"] = networks
        return sample

    def prune(self, filters: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        return listing.prune(self, filters)

    def counts(self) -> Any:
        """``docker info``'s container counts (the daemon's ContainerCounter)."""
        return listing.counts(self)

    # --- callbacks for others -------------------------------------------------------------

    def network_target(self, ref: str) -> tuple[str, str, bool]:
        """For the network layer: (ID, name without "/", running). Raises NotFound."""
        c = self.get(ref)
        return c.id, c.name.lstrip("/"), c.state.running

    def image_in_use(self, image_id: str) -> bool:
        """For ``docker rmi``: does a container use this image?"""
        return any(c.image == image_id for c in self.store.all())

    def on_each(self, fn: Callable[[Container], None]) -> None:
        for c in self.store.all():
            fn(c)
