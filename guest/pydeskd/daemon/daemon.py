"""The daemon object: every service of pydeskd, built once from the configuration.

What it is for: the API routes reach everything through ``request.app.state.daemon``: the image
service, the event bus and (filled by their own modules) the container and volume services.
It also answers what ``docker info`` and ``docker version`` print about the host.

What it must never do: serve HTTP, or hold per-request state.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.registry import RegistryHosts
from pydeskd.containerd.service import ImageService
from pydeskd.daemon.config import PYDESK_VERSION, DaemonConfig, RuntimeConfig
from pydeskd.daemon.containers.context import ServicePaths
from pydeskd.daemon.containers.service import ContainerService
from pydeskd.daemon.events import EventBus
from pydeskd.network.service import NetworkService
from pydeskd.shim.runtime import default_runtime

log = logging.getLogger(__name__)

# The engine version reported to clients. Tools gate features on it (Compose, buildx,
# Testcontainers compare it), so it names the Docker Engine release whose API pydeskd serves;
# pydesk's own version is in Platform and Components.
ENGINE_VERSION = "28.2.2"


@dataclass(frozen=True)
class ContainerCounts:
    total: int = 0
    running: int = 0
    paused: int = 0
    stopped: int = 0


class ContainerCounter(Protocol):
    """What ``docker info`` needs from the container service (H3's ``Daemon.containers``)."""

    def counts(self) -> ContainerCounts: ...


@dataclass(frozen=True)
class HostInfo:
    """Facts about the machine, read once at startup (``probe_host``)."""

    kernel: str
    operating_system: str
    os_version: str
    architecture: str
    ncpu: int
    mem_total: int
    cgroup_version: str
    cgroup_driver: str
    hostname: str


def _os_release(root: Path = Path("/")) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key.strip()] = value.strip().strip('"')
        break
    return out


def _mem_total(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def probe_host(root: Path = Path("/")) -> HostInfo:
    release = _os_release(root)
    cgroup2 = (root / "sys/fs/cgroup/cgroup.controllers").exists()
    return HostInfo(
        kernel=platform.release(),
        operating_system=release.get("PRETTY_NAME", "Linux"),
        os_version=release.get("VERSION_ID", ""),
        architecture=platform.machine(),
        ncpu=os.cpu_count() or 1,
        mem_total=_mem_total(root / "proc/meminfo"),
        cgroup_version="2" if cgroup2 else "1",
        cgroup_driver="cgroupfs",
        hostname=socket.gethostname(),
    )


def runtime_path(runtime: RuntimeConfig) -> Path:
    """The runtime's executable: an absolute path as configured, a name found on PATH, and
    the built-in ``pydesk-runc`` next to this interpreter (pydeskd may run without the
    virtualenv on PATH)."""
    path = Path(runtime.path)
    if path.is_absolute():
        return path
    found = shutil.which(runtime.path)
    if found:
        return Path(found)
    if runtime.path == "pydesk-runc":
        return default_runtime()
    raise InvalidArgument(f"runtime {runtime.path!r} not found on PATH")


def _daemon_id(data_root: Path) -> str:
    """A stable ID for this daemon's data root (``docker info``'s ID), made on first start."""
    path = data_root / "engine-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        engine_id = str(uuid.uuid4())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(engine_id + "\n")
        os.replace(tmp, path)
        return engine_id


@dataclass
class Daemon:
    config: DaemonConfig
    images: ImageService
    events: EventBus
    host: HostInfo
    id: str
    # Filled by the services other modules build (containers: H3; volumes: later). They stay
    # None until then, and every route that needs one says so with a 503.
    containers: Any = None
    volumes: Any = None
    networks: NetworkService | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def create(config: DaemonConfig, host: HostInfo | None = None) -> Daemon:
        """Make the data and exec roots and open every service (ImageService runs its crash
        recovery here)."""
        config.data_root.mkdir(parents=True, exist_ok=True, mode=0o711)
        config.exec_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        hosts = RegistryHosts(config.registry_mirrors, config.insecure_registries)
        images = ImageService(config.images_root, hosts)
        events = EventBus()
        # Building it touches nothing on the host: the bridges, rules and resolver come up in
        # restore() (pydeskd's start) or with the first container that needs them.
        networks = NetworkService(config.data_root, config.exec_root, events)
        containers = ContainerService(
            images, events,
            ServicePaths(config.data_root, config.exec_root,
                         runtime=runtime_path(config.runtime()),
                         cgroup_parent=config.cgroup_parent, init_path=config.init_path),
            network=networks)
        return Daemon(config=config, images=images, events=events,
                      host=host or probe_host(), id=_daemon_id(config.data_root),
                      containers=containers, volumes=containers.volumes, networks=networks)

    def restore(self) -> None:
        """Find the containers again (live restore): running ones through their shims, and
        restart policies for the ones that exited while the daemon was down. A failure is
        logged, never fatal: the daemon must come up to let the user see and fix things."""
        if self.networks is not None:
            try:
                self.networks.start()
            except Exception:
                log.exception("bringing the networks up failed")
        try:
            restored = self.containers.restore()
        except Exception:
            log.exception("restoring containers failed")
            return
        log.info("restored %d containers", len(restored))

    def close(self) -> None:
        for service in (self.containers, self.volumes, self.networks):
            close = getattr(service, "close", None)
            if callable(close):
                close()
        self.images.close()

    def container_counts(self) -> ContainerCounts:
        counter = self.containers
        if counter is None or not hasattr(counter, "counts"):
            return ContainerCounts()
        counts: ContainerCounts = counter.counts()
        return counts

    def image_count(self) -> int:
        return len({image.id for image in self.images.list()})

    def version(self, api_version: str, min_api_version: str) -> dict[str, Any]:
        """``GET /version``."""
        details = {
            "ApiVersion": api_version,
            "MinAPIVersion": min_api_version,
            "GitCommit": "pydesk",
            "GoVersion": f"python{platform.python_version()}",
            "Os": "linux",
            "Arch": _go_arch(self.host.architecture),
            "KernelVersion": self.host.kernel,
            "BuildTime": "",
            "Experimental": "false",
        }
        return {
            "Platform": {"Name": f"pydesk {PYDESK_VERSION}"},
            "Components": [
                {"Name": "Engine", "Version": ENGINE_VERSION, "Details": details},
                {"Name": "pydesk", "Version": PYDESK_VERSION,
                 "Details": {"GitCommit": "pydesk"}},
            ],
            "Version": ENGINE_VERSION,
            "ApiVersion": api_version,
            "MinAPIVersion": min_api_version,
            "GitCommit": "pydesk",
            "GoVersion": details["GoVersion"],
            "Os": "linux",
            "Arch": details["Arch"],
            "KernelVersion": self.host.kernel,
            "BuildTime": "",
        }

    def info(self, events_listeners: int = 0) -> dict[str, Any]:
        """``GET /info``: the fields the docker CLI prints."""
        counts = self.container_counts()
        host = self.host
        config = self.config
        return {
            "ID": self.id,
            "Containers": counts.total,
            "ContainersRunning": counts.running,
            "ContainersPaused": counts.paused,
            "ContainersStopped": counts.stopped,
            "Images": self.image_count(),
            "Driver": "overlayfs",
            "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                        "Authorization": None, "Log": ["json-file", "local"]},
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "IPv4Forwarding": True,
            "Debug": config.debug,
            "NFd": _count_fds(),
            "OomKillDisable": False,
            "NGoroutines": _thread_count(),
            "SystemTime": _now_rfc3339(),
            "LoggingDriver": config.log.driver,
            "CgroupDriver": host.cgroup_driver,
            "CgroupVersion": host.cgroup_version,
            "NEventsListener": events_listeners,
            "KernelVersion": host.kernel,
            "OperatingSystem": host.operating_system,
            "OSVersion": host.os_version,
            "OSType": "linux",
            "Architecture": host.architecture,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": self._registry_config(),
            "NCPU": host.ncpu,
            "MemTotal": host.mem_total,
            "GenericResources": None,
            "DockerRootDir": str(config.data_root),
            "HttpProxy": os.environ.get("HTTP_PROXY", ""),
            "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
            "NoProxy": os.environ.get("NO_PROXY", ""),
            "Name": host.hostname,
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": ENGINE_VERSION,
            "Runtimes": {name: rt.to_json() for name, rt in config.runtimes.items()},
            "DefaultRuntime": config.default_runtime,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                      "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": {"ID": "pydesk"},
            "RuncCommit": {"ID": "pydesk"},
            "InitCommit": {"ID": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin",
                                *(["name=cgroupns"] if host.cgroup_version == "2" else [])],
            "Warnings": [],
        }

    def _registry_config(self) -> dict[str, Any]:
        config = self.config
        cidrs = [c for c in config.insecure_registries if "/" in c]
        insecure_hosts = [h for h in config.insecure_registries if "/" not in h]
        index_configs: dict[str, Any] = {
            "docker.io": {"Name": "docker.io", "Mirrors": list(config.registry_mirrors),
                          "Secure": True, "Official": True},
        }
        for name in insecure_hosts:
            index_configs[name] = {"Name": name, "Mirrors": [], "Secure": False,
                                   "Official": False}
        return {
            "AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8", *cidrs],
            "IndexConfigs": index_configs,
            "Mirrors": list(config.registry_mirrors),
        }


def _go_arch(machine: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def _count_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _thread_count() -> int:
    import threading
    return threading.active_count()


def _now_rfc3339() -> str:
    import datetime
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
