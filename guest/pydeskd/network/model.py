"""The network layer's records: networks, what a container asked for, and what it holds.

What it is for: the typed, frozen data that the store persists (``to_json``/``from_json``) and
the service, the driver and the firewall read. A ``Network`` is one network (bridge, host or
null driver); an ``Attachment`` is one container's network wishes (mode, endpoint configs,
published ports) that live as long as the container, with ``active`` holding what its
running task has (netns, endpoints with address and veth, resolved host ports).

What it must never do: I/O, or hold anything that cannot be rebuilt from the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_BRIDGE = "bridge"
PREDEFINED = ("bridge", "host", "none")


@dataclass(frozen=True)
class Pool:
    """One IPv4 subnet of a network, as IPAM.Config shows it."""

    subnet: str
    gateway: str
    ip_range: str = ""
    aux: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Subnet": self.subnet, "Gateway": self.gateway}
        if self.ip_range:
            out["IPRange"] = self.ip_range
        if self.aux:
            out["AuxiliaryAddresses"] = dict(self.aux)
        return out

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Pool:
        return Pool(str(obj["Subnet"]), str(obj.get("Gateway") or ""),
                    str(obj.get("IPRange") or ""), dict(obj.get("AuxiliaryAddresses") or {}))


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str                    # "bridge", "host" or "null"
    created: str
    bridge: str = ""               # the Linux bridge's name (bridge driver only)
    pools: tuple[Pool, ...] = ()
    internal: bool = False
    attachable: bool = False
    default: bool = False          # the default bridge network ("bridge")
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    ipam_options: Mapping[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def user_defined(self) -> bool:
        return self.driver == "bridge" and not self.default

    @property
    def pool(self) -> Pool | None:
        return self.pools[0] if self.pools else None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "driver": self.driver,
                "created": self.created, "bridge": self.bridge,
                "pools": [p.to_json() for p in self.pools], "internal": self.internal,
                "attachable": self.attachable, "default": self.default,
                "labels": dict(self.labels), "options": dict(self.options),
                "ipam_options": dict(self.ipam_options)}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Network:
        return Network(
            id=str(obj["id"]), name=str(obj["name"]), driver=str(obj["driver"]),
            created=str(obj.get("created") or ""), bridge=str(obj.get("bridge") or ""),
            pools=tuple(Pool.from_json(p) for p in obj.get("pools") or ()),
            internal=bool(obj.get("internal")), attachable=bool(obj.get("attachable")),
            default=bool(obj.get("default")), labels=dict(obj.get("labels") or {}),
            options=dict(obj.get("options") or {}),
            ipam_options=dict(obj.get("ipam_options") or {}))


@dataclass(frozen=True)
class EndpointConfig:
    """What a container asked for on one network (EndpointSettings of the API)."""

    network_id: str
    aliases: tuple[str, ...] = ()
    ipv4: str = ""                 # a static address (--ip); "" for one from the pool
    mac: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"network_id": self.network_id, "aliases": list(self.aliases),
                "ipv4": self.ipv4, "mac": self.mac}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> EndpointConfig:
        return EndpointConfig(str(obj["network_id"]), tuple(obj.get("aliases") or ()),
                              str(obj.get("ipv4") or ""), str(obj.get("mac") or ""))


@dataclass(frozen=True)
class Endpoint:
    """One live interface of a running container on one network."""

    network_id: str
    endpoint_id: str
    address: str                   # IPv4 address, no prefix
    prefixlen: int
    gateway: str
    mac: str
    ifname: str                    # inside the container: eth0, eth1...
    host_veth: str                 # on the host, enslaved to the network's bridge

    def to_json(self) -> dict[str, Any]:
        return {"network_id": self.network_id, "endpoint_id": self.endpoint_id,
                "address": self.address, "prefixlen": self.prefixlen,
                "gateway": self.gateway, "mac": self.mac, "ifname": self.ifname,
                "host_veth": self.host_veth}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Endpoint:
        return Endpoint(str(obj["network_id"]), str(obj["endpoint_id"]), str(obj["address"]),
                        int(obj["prefixlen"]), str(obj["gateway"]), str(obj["mac"]),
                        str(obj["ifname"]), str(obj["host_veth"]))


@dataclass(frozen=True)
class PortMapping:
    """One published port, resolved (the host port is a number even for ``-p 80``)."""

    proto: str                     # "tcp" or "udp"
    container_port: int
    host_ip: str                   # "0.0.0.0" for every address
    host_port: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def to_json(self) -> dict[str, Any]:
        return {"proto": self.proto, "container_port": self.container_port,
                "host_ip": self.host_ip, "host_port": self.host_port}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> PortMapping:
        return PortMapping(str(obj["proto"]), int(obj["container_port"]),
                           str(obj["host_ip"]), int(obj["host_port"]))


@dataclass(frozen=True)
class Active:
    """What a running task holds: its netns (None when it shares another's or the host's),
    its endpoints, its published ports."""

    netns: str = ""
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[PortMapping, ...] = ()

    def endpoint(self, network_id: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network_id == network_id), None)

    def to_json(self) -> dict[str, Any]:
        return {"netns": self.netns, "endpoints": [e.to_json() for e in self.endpoints],
                "ports": [p.to_json() for p in self.ports]}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Active:
        return Active(str(obj.get("netns") or ""),
                      tuple(Endpoint.from_json(e) for e in obj.get("endpoints") or ()),
                      tuple(PortMapping.from_json(p) for p in obj.get("ports") or ()))


@dataclass(frozen=True)
class Attachment:
    """One container's networking, kept from create to remove.

    ``mode``: "bridge" (or any network name: the first network), "host", "none" or
    ``container:<id>``. ``configs``: the networks it is connected to, in connection order.
    """

    cid: str
    name: str                      # the container's name, without the leading "/"
    mode: str
    configs: tuple[EndpointConfig, ...] = ()
    active: Active | None = None

    @property
    def shares_netns(self) -> bool:
        return self.mode in ("host",) or self.mode.startswith("container:")

    def config(self, network_id: str) -> EndpointConfig | None:
        return next((c for c in self.configs if c.network_id == network_id), None)

    def with_active(self, active: Active | None) -> Attachment:
        return replace(self, active=active)

    def to_json(self) -> dict[str, Any]:
        return {"cid": self.cid, "name": self.name, "mode": self.mode,
                "configs": [c.to_json() for c in self.configs],
                "active": self.active.to_json() if self.active is not None else None}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Attachment:
        active = obj.get("active")
        return Attachment(str(obj["cid"]), str(obj.get("name") or ""), str(obj["mode"]),
                          tuple(EndpointConfig.from_json(c) for c in obj.get("configs") or ()),
                          Active.from_json(active) if active is not None else None)


@dataclass(frozen=True)
class SandboxInfo:
    """What ``NetworkService.attach`` tells the container service before ``runtime create``.

    ``netns``: the namespace path the container joins ("" in host mode: the spec then drops
    the network namespace). ``hosts``: (address, names) lines for /etc/hosts after the
    header. ``nameservers``: None for the host's filtered resolv.conf, else the servers to
    write first (the embedded resolver on user networks).
    """

    netns: str
    hosts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    nameservers: tuple[str, ...] | None = None
    host_mode: bool = False
    gateway: str = ""              # what ``--add-host name:host-gateway`` maps to
