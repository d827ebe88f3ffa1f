"""The container record: everything pydeskd keeps about one container, and its inspect JSON.

What it is for: one ``config.v2.json`` per container (as dockerd's), holding the API's Config and
HostConfig as the client sent them (Docker JSON), the image, the paths of its files, its state
and its mounts. ``to_inspect()`` gives ``GET /containers/{id}/json``. The record is mutable and
changed only under the container's lock (see :mod:`.store`); this module must never do I/O.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .names import short_id
from .state import State, Status


@dataclass
class Container:
    id: str
    name: str                        # with the leading "/"
    created: str
    path: str
    args: list[str]
    config: dict[str, Any]           # API Config (Image, Env, Cmd, Labels, ...)
    host_config: dict[str, Any]      # API HostConfig
    image: str                       # image ID (sha256:...)
    image_name: str                  # what the client asked for (Config.Image)
    state: State = field(default_factory=State)
    restart_count: int = 0
    log_path: str = ""
    resolv_conf_path: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    mounts: list[dict[str, Any]] = field(default_factory=list)  # inspect MountPoints
    resolved_mounts: list[dict[str, Any]] = field(default_factory=list)  # mounts.Resolved
    snapshot_key: str = ""
    cgroups_path: str = ""           # the spec's linux.cgroupsPath of the last start
    has_been_started: bool = False
    manually_stopped: bool = False   # docker stop: no restart policy, unless-stopped stays down
    exec_ids: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def restart_policy(self) -> dict[str, Any]:
        return dict(self.host_config.get("RestartPolicy") or {})

    # --- persistence ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "created": self.created, "path": self.path,
            "args": self.args, "config": self.config, "host_config": self.host_config,
            "image": self.image, "image_name": self.image_name, "state": self.state.to_json(),
            "restart_count": self.restart_count, "log_path": self.log_path,
            "resolv_conf_path": self.resolv_conf_path, "hostname_path": self.hostname_path,
            "hosts_path": self.hosts_path, "mounts": self.mounts,
            "resolved_mounts": self.resolved_mounts,
            "snapshot_key": self.snapshot_key, "cgroups_path": self.cgroups_path,
            "has_been_started": self.has_been_started,
            "manually_stopped": self.manually_stopped, "exec_ids": self.exec_ids,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Container:
        fields = dict(obj)
        fields["state"] = State.from_json(fields.get("state") or {})
        return cls(**fields)

    # --- API ------------------------------------------------------------------------------

    def to_inspect(self, size_rw: int | None = None,
                   size_root_fs: int | None = None) -> dict[str, Any]:
        """Docker's ``ContainerJSON``."""
        out: dict[str, Any] = {
            "Id": self.id, "Created": self.created, "Path": self.path, "Args": list(self.args),
            "State": self.state.to_inspect(), "Image": self.image,
            "ResolvConfPath": self.resolv_conf_path, "HostnamePath": self.hostname_path,
            "HostsPath": self.hosts_path, "LogPath": self.log_path, "Name": self.name,
            "RestartCount": self.restart_count, "Driver": "overlayfs", "Platform": "linux",
            "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
            "ExecIDs": list(self.exec_ids) or None,
            "HostConfig": copy.deepcopy(self.host_config),
            "GraphDriver": {"Data": None, "Name": "overlayfs"},
            "Mounts": copy.deepcopy(self.mounts),
            "Config": copy.deepcopy(self.config),
            "NetworkSettings": {"Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
                                "HairpinMode": False, "LinkLocalIPv6Address": "",
                                "LinkLocalIPv6PrefixLen": 0, "SecondaryIPAddresses": None,
                                "SecondaryIPv6Addresses": None, "EndpointID": "",
                                "Gateway": "", "GlobalIPv6Address": "",
                                "GlobalIPv6PrefixLen": 0, "IPAddress": "", "IPPrefixLen": 0,
                                "IPv6Gateway": "", "MacAddress": "", "Networks": {}},
        }
        if size_rw is not None:
            out["SizeRw"] = size_rw
        if size_root_fs is not None:
            out["SizeRootFs"] = size_root_fs
        return out

    def to_summary(self, created_unix: int, status_text: str,
                   size_rw: int | None = None, size_root_fs: int | None = None,
                   ) -> dict[str, Any]:
        """Docker's ``Container`` summary (``GET /containers/json``)."""
        command = " ".join([self.path, *self.args]).strip()
        out: dict[str, Any] = {
            "Id": self.id, "Names": [self.name], "Image": self.image_name,
            "ImageID": self.image, "Command": command, "Created": created_unix, "Ports": [],
            "Labels": self.labels, "State": str(self.state.status), "Status": status_text,
            "HostConfig": {"NetworkMode": self.host_config.get("NetworkMode") or "default"},
            "NetworkSettings": {"Networks": {}},
            "Mounts": copy.deepcopy(self.mounts),
        }
        if size_rw is not None:
            out["SizeRw"] = size_rw
        if size_root_fs is not None:
            out["SizeRootFs"] = size_root_fs
        return out

    @property
    def status(self) -> Status:
        return self.state.status
