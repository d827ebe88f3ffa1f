"""A HostView that answers from tables, for building specs without looking at the host."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydeskd.daemon.ocispec import DeviceNode


@dataclass
class FakeHost:
    nodes: dict[str, DeviceNode] = field(default_factory=lambda: {
        "/dev/null": DeviceNode("c", "/dev/null", 1, 3, 0o666, 0, 0),
        "/dev/sda": DeviceNode("b", "/dev/sda", 8, 0, 0o660, 0, 6),
        "/dev/snd/timer": DeviceNode("c", "/dev/snd/timer", 116, 33, 0o660, 0, 29),
    })
    sysctls: frozenset[str] = frozenset(("net.ipv4.ping_group_range",
                                         "net.ipv4.ip_unprivileged_port_start"))
    paths: frozenset[str] = frozenset()
    arch: str = "x86_64"
    kernel_version: tuple[int, int] = (6, 1)
    last: int = 40
    bounding: int | None = None  # None: every capability (no restriction)
    cpus: int = 2

    def device(self, path: str) -> DeviceNode | None:
        if path in self.nodes:
            return self.nodes[path]
        if any(p.startswith(path.rstrip("/") + "/") for p in self.nodes):
            return None
        raise FileNotFoundError(2, "No such file or directory", path)

    def devices_under(self, path: str) -> list[DeviceNode]:
        prefix = path.rstrip("/") + "/"
        return [n for p, n in sorted(self.nodes.items()) if p.startswith(prefix)]

    def sysctl_exists(self, name: str) -> bool:
        return name in self.sysctls

    def path_exists(self, path: str) -> bool:
        return path in self.paths

    def cpu_count(self) -> int:
        return self.cpus

    def machine(self) -> str:
        return self.arch

    def kernel(self) -> tuple[int, int]:
        return self.kernel_version

    def last_cap(self) -> int:
        return self.last

    def bounding_set(self) -> int | None:
        return self.bounding
