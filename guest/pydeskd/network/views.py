"""What the Engine API shows of networks and of a container's networking (Docker's shapes).

What it is for: ``network_json`` (``GET /networks`` and ``/networks/{id}``), ``matches``
(the list and prune filters: name, id, label, driver, type, dangling), ``endpoint_settings`` and
``network_settings`` (a container's ``NetworkSettings`` in inspect, ``docker ps``). Pure.

What it must never do: look anything up by itself (the service passes what it needs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.network import ports
from pydeskd.network.model import Attachment, Endpoint, EndpointConfig, Network, PortMapping

FILTERS = ("name", "id", "label", "driver", "type", "dangling", "scope")


def network_json(net: Network, containers: Mapping[str, dict[str, str]] | None = None
                 ) -> dict[str, Any]:
    options = dict(net.options)
    if net.default:
        options.setdefault("com.docker.network.bridge.default_bridge", "true")
        options.setdefault("com.docker.network.bridge.name", net.bridge)
    return {
        "Name": net.name, "Id": net.id, "Created": net.created, "Scope": "local",
        "Driver": net.driver, "EnableIPv4": True, "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": dict(net.ipam_options) or None,
                 "Config": [p.to_json() for p in net.pools]},
        "Internal": net.internal, "Attachable": net.attachable, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": dict(containers or {}), "Options": options,
        "Labels": dict(net.labels),
    }


def container_entry(att: Attachment, ep: Endpoint) -> dict[str, str]:
    return {"Name": att.name, "EndpointID": ep.endpoint_id, "MacAddress": ep.mac,
            "IPv4Address": f"{ep.address}/{ep.prefixlen}", "IPv6Address": ""}


def check_filters(filters: Mapping[str, Sequence[str]]) -> None:
    for key in filters:
        if key not in FILTERS:
            raise InvalidArgument(f"invalid filter '{key}'")
    for value in filters.get("type", ()):
        if value not in ("custom", "builtin"):
            raise InvalidArgument(f"invalid filter: 'type'='{value}'")
    for value in filters.get("dangling", ()):
        if value.lower() not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid filter 'dangling={value}'")


def _label_ok(labels: Mapping[str, str], wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


def matches(net: Network, filters: Mapping[str, Sequence[str]], in_use: bool) -> bool:
    """Docker's network filters; values of one key are OR-ed, keys AND-ed."""
    if (names := filters.get("name")) and not any(n in net.name for n in names):
        return False
    if (ids := filters.get("id")) and not any(net.id.startswith(i) for i in ids):
        return False
    labels = filters.get("label") or ()
    if not all(_label_ok(net.labels, wanted) for wanted in labels):
        return False
    if (drivers := filters.get("driver")) and net.driver not in drivers:
        return False
    if kinds := filters.get("type"):
        kind = "builtin" if net.predefined else "custom"
        if kind not in kinds:
            return False
    if (scopes := filters.get("scope")) and "local" not in scopes:
        return False
    if dangling := filters.get("dangling"):
        want = dangling[-1].lower() in ("true", "1")
        if want != (not in_use and not net.predefined):
            return False
    return True


def endpoint_settings(net: Network, cfg: EndpointConfig | None, ep: Endpoint | None,
                      cid: str, name: str = "") -> dict[str, Any]:
    """One entry of ``NetworkSettings.Networks``."""
    aliases = list(cfg.aliases) if cfg is not None else []
    dns_names = None
    if ep is not None and net.user_defined:
        dns_names = list(dict.fromkeys([n for n in (name, *aliases, cid[:12]) if n]))
    return {
        "IPAMConfig": {"IPv4Address": cfg.ipv4} if cfg is not None and cfg.ipv4 else None,
        "Links": None, "Aliases": aliases or None, "MacAddress": ep.mac if ep else "",
        "DriverOpts": None, "GwPriority": 0, "NetworkID": net.id,
        "EndpointID": ep.endpoint_id if ep else "", "Gateway": ep.gateway if ep else "",
        "IPAddress": ep.address if ep else "", "IPPrefixLen": ep.prefixlen if ep else 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns_names,
    }


def network_settings(att: Attachment | None, networks: Mapping[str, Network],
                     exposed: Sequence[str]) -> dict[str, Any]:
    """A container's ``NetworkSettings`` (inspect)."""
    active = att.active if att is not None else None
    mappings: Sequence[PortMapping] = active.ports if active is not None else ()
    out: dict[str, Any] = {
        "Bridge": "", "SandboxID": "", "SandboxKey": active.netns if active else "",
        "Ports": ports.inspect_ports(exposed, mappings) if active is not None else {},
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
        "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
        "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "", "Networks": {},
    }
    if att is None:
        return out
    if active is not None and active.netns:
        out["SandboxID"] = _sandbox_id(active.netns)
    nets: dict[str, Any] = {}
    for cfg in att.configs:
        net = networks.get(cfg.network_id)
        if net is None:
            continue
        ep = active.endpoint(net.id) if active is not None else None
        nets[net.name] = endpoint_settings(net, cfg, ep, att.cid, att.name)
        if net.default and ep is not None:
            out.update(EndpointID=ep.endpoint_id, Gateway=ep.gateway, IPAddress=ep.address,
                       IPPrefixLen=ep.prefixlen, MacAddress=ep.mac)
    if att.mode in ("host", "none"):
        net = next((n for n in networks.values() if n.name == att.mode), None)
        if net is not None:
            nets[net.name] = endpoint_settings(net, None, None, att.cid)
    out["Networks"] = nets
    return out


def _sandbox_id(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def summary_networks(att: Attachment | None, networks: Mapping[str, Network]
                     ) -> dict[str, Any]:
    """``NetworkSettings`` of ``GET /containers/json``."""
    if att is None:
        return {"Networks": {}}
    return {"Networks": network_settings(att, networks, ())["Networks"]}


def subnet_of(net: Network) -> IPv4Network | None:
    pool = net.pool
    return IPv4Network(pool.subnet) if pool is not None else None


def _port_matches(wanted: str, port: int | None, proto: str) -> bool:
    number, _, want_proto = wanted.partition("/")
    if (want_proto and want_proto != proto) or port is None:
        return False
    low, _, high = number.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise InvalidArgument(f"invalid filter: {wanted!r} is not a port or a port range")
    return int(low) <= port <= int(high or low)


def row_matches(row: Mapping[str, Any], filters: Mapping[str, Sequence[str]]) -> bool:
    """The ``network``, ``publish`` and ``expose`` filters of ``docker ps`` over a summary row
    (its NetworkSettings and Ports): a network by name or ID, a port or range with an optional
    protocol (``8080``, ``80/tcp``, ``8000-8010``)."""
    if wanted := filters.get("network"):
        nets = (row.get("NetworkSettings") or {}).get("Networks") or {}
        keys = {*nets, *(str(n.get("NetworkID") or "") for n in nets.values())}
        if not any(w in keys or any(k.startswith(w) for k in keys if len(w) >= 12)
                   for w in wanted):
            return False
    rows = row.get("Ports") or []
    for key, field in (("publish", "PublicPort"), ("expose", "PrivatePort")):
        if (values := filters.get(key)) and not any(
                _port_matches(v, p.get(field), str(p.get("Type"))) for v in values
                for p in rows):
            return False
    return True
