"""Recording fakes of the network layer's seams (netlink, netns, sysctl, firewall, proxies):
what the service asked of the host, without root."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from pydeskd.network.driver import Seams
from pydeskd.network.firewall import Ruleset
from pydeskd.network.model import PortMapping


class PortTaken(Exception):
    pass


@dataclass
class FakeLinks:
    routes: list[IPv4Network] = field(default_factory=lambda: [IPv4Network("0.0.0.0/0")])
    bridges: dict[str, tuple[str, int]] = field(default_factory=dict)
    veths: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # host -> (br, ns, ip)
    fail_veth: bool = False
    default_routes: dict[str, str] = field(default_factory=dict)

    def host_routes(self) -> list[IPv4Network]:
        own = [IPv4Network(f"{a}/{p}", strict=False) for a, p in self.bridges.values()]
        return [*self.routes, *own]

    def link_exists(self, name: str) -> bool:
        return name in self.bridges or name in self.veths

    def ensure_bridge(self, name: str, address: str, prefixlen: int) -> None:
        self.bridges[name] = (address, prefixlen)

    def delete_link(self, name: str) -> None:
        self.bridges.pop(name, None)
        self.veths.pop(name, None)

    def add_veth(self, host_name: str, bridge: str, *, netns: str, ifname: str, address: str,
                 prefixlen: int, mac: str, gateway: str, default_route: bool) -> None:
        if self.fail_veth:
            raise OSError("veth refused (fake)")
        assert bridge in self.bridges
        self.veths[host_name] = (bridge, netns, address)

    def loopback_up(self, netns: str) -> None:
        pass

    def set_default_route(self, netns: str, gateway: str) -> None:
        self.default_routes[netns] = gateway

    def bridge_ports(self, bridge: str) -> list[str]:
        return [v for v, (b, _, _) in self.veths.items() if b == bridge]

    def links(self, prefix: str) -> list[str]:
        return [n for n in [*self.bridges, *self.veths] if n.startswith(prefix)]


@dataclass
class FakeNamespaces:
    live: set[str] = field(default_factory=set)

    def create(self, path: Path) -> None:
        self.live.add(str(path))

    def delete(self, path: Path) -> None:
        self.live.discard(str(path))

    def exists(self, path: Path) -> bool:
        return str(path) in self.live


@dataclass
class FakeSysctls:
    values: dict[str, str] = field(default_factory=dict)

    def write(self, key: str, value: str) -> None:
        self.values[key] = value

    def read(self, key: str) -> str:
        return self.values.get(key, "0")


@dataclass
class FakeFirewall:
    applied: list[Ruleset] = field(default_factory=list)
    torn_down: list[str] = field(default_factory=list)

    def apply(self, ruleset: Ruleset) -> None:
        self.applied.append(ruleset)

    def teardown(self, prefix: str) -> None:
        self.torn_down.append(prefix)


@dataclass
class FakeProxies:
    running: dict[Path, PortMapping] = field(default_factory=dict)
    busy: set[int] = field(default_factory=set)  # host ports "someone else" holds

    def start(self, mapping: PortMapping, container_ip: str, pid_file: Path) -> int:
        from pydeskd.containerd.errors import FailedPrecondition
        if mapping.host_port in self.busy or any(
                m.host_port == mapping.host_port and m.proto == mapping.proto
                for m in self.running.values()):
            shown = mapping.host_ip or "0.0.0.0"  # "" is every address, shown as Docker does
            raise FailedPrecondition(f"Bind for {shown}:{mapping.host_port} "
                                     f"failed: port is already allocated")
        self.running[pid_file] = mapping
        return 4242

    def stop(self, pid_file: Path) -> None:
        self.running.pop(pid_file, None)

    def alive(self, pid_file: Path) -> bool:
        return pid_file in self.running


def fake_seams() -> Seams:
    return Seams(links=FakeLinks(), namespaces=FakeNamespaces(), sysctls=FakeSysctls(),
                 firewall=FakeFirewall(), proxies=FakeProxies(), host_lock=None)
