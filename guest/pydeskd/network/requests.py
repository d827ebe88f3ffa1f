"""Engine API request bodies of the network layer, decoded into frozen data.

What it is for: ``CreateRequest.from_api`` (``POST /networks/create``: Name, Driver, Internal,
Attachable, IPAM.Config, Options, Labels, EnableIPv6) and ``EndpointRequest.from_api`` (an
``EndpointSettings`` of ``NetworkingConfig.EndpointsConfig`` or of ``/networks/{id}/connect``:
IPAMConfig.IPv4Address, Aliases, MacAddress: parsed, so a bad one fails at create), with
Docker's messages for what pydesk refuses.
Pure.

What it must never do: look up networks or containers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydeskd.containerd.errors import InvalidArgument

DRIVERS = ("bridge",)


def _strings(obj: Any, what: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping) or not all(isinstance(v, str) for v in obj.values()):
        raise InvalidArgument(f"json: cannot unmarshal {what} into a map of strings")
    return {str(k): str(v) for k, v in obj.items()}


@dataclass(frozen=True)
class PoolRequest:
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    aux: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateRequest:
    name: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    pools: tuple[PoolRequest, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    ipam_options: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def from_api(body: Mapping[str, Any]) -> CreateRequest:
        name = body.get("Name")
        if not isinstance(name, str):
            raise InvalidArgument("json: Name must be a string")
        if not name.strip():
            raise InvalidArgument("network name cannot be empty")
        driver = body.get("Driver") or "bridge"
        if driver not in DRIVERS:
            raise InvalidArgument(f"plugin \"{driver}\" not found: pydesk has the bridge "
                                  f"driver only")
        if body.get("EnableIPv6"):
            raise InvalidArgument("IPv6 networks are not supported by pydesk")
        if body.get("Ingress") or body.get("ConfigOnly"):
            raise InvalidArgument("ingress and config-only networks need swarm mode, which "
                                  "pydeskd does not have")
        scope = body.get("Scope") or "local"
        if scope != "local":
            raise InvalidArgument(f"scope {scope!r} is not supported: pydesk networks are local")
        ipam = body.get("IPAM") or {}
        if not isinstance(ipam, Mapping):
            raise InvalidArgument("json: IPAM must be an object")
        if (ipam.get("Driver") or "default") != "default":
            raise InvalidArgument(f"IPAM driver \"{ipam.get('Driver')}\" not found")
        pools = []
        for entry in ipam.get("Config") or ():
            if not isinstance(entry, Mapping):
                raise InvalidArgument("json: IPAM.Config entries must be objects")
            if not entry.get("Subnet"):
                if entry.get("IPRange") or entry.get("Gateway"):
                    raise InvalidArgument("ip-range and gateway need a subnet (--subnet)")
                continue
            pools.append(PoolRequest(str(entry["Subnet"]), str(entry.get("Gateway") or ""),
                                     str(entry.get("IPRange") or ""),
                                     _strings(entry.get("AuxiliaryAddresses"),
                                              "AuxiliaryAddresses")))
        if len(pools) > 1:
            raise InvalidArgument("pydesk networks have one IPv4 subnet")
        return CreateRequest(
            name=name, driver=str(driver), internal=bool(body.get("Internal")),
            attachable=bool(body.get("Attachable")), pools=tuple(pools),
            options=_strings(body.get("Options"), "Options"),
            labels=_strings(body.get("Labels"), "Labels"),
            ipam_options=_strings(ipam.get("Options"), "IPAM.Options"))


@dataclass(frozen=True)
class EndpointRequest:
    ipv4: str = ""
    aliases: tuple[str, ...] = ()
    mac: str = ""

    @staticmethod
    def from_api(obj: Any) -> EndpointRequest:
        if obj is None:
            return EndpointRequest()
        if not isinstance(obj, Mapping):
            raise InvalidArgument("json: EndpointSettings must be an object")
        ipam = obj.get("IPAMConfig") or {}
        if not isinstance(ipam, Mapping):
            raise InvalidArgument("json: IPAMConfig must be an object")
        aliases = obj.get("Aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InvalidArgument("json: Aliases must be a list of strings")
        if ipam.get("IPv6Address"):
            raise InvalidArgument("IPv6 addresses are not supported by pydesk")
        return EndpointRequest(str(ipam.get("IPv4Address") or ""),
                               tuple(dict.fromkeys(a for a in aliases if a)),
                               parse_mac(obj.get("MacAddress")))


def parse_mac(value: Any) -> str:
    """An endpoint's MacAddress, canonical (``02:42:ac:11:00:02``; "" for none). Raises
    InvalidArgument ("invalid MAC address X", dockerd's wording) for anything else than six
    bytes, and for a multicast address, which no interface can take."""
    text = str(value or "").strip()
    if not text:
        return ""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF"
                                                     for c in p) for p in parts):
        raise InvalidArgument(f"invalid MAC address {text}")
    if int(parts[0], 16) & 1:
        raise InvalidArgument(f"invalid MAC address {text}: it is a multicast address")
    return ":".join(parts).lower()
