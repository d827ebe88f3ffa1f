"""The unit tier's world for NetworkService: the service over recording fakes, a fake event
bus and a fake container service (which containers exist and run)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydeskd.containerd.errors import NotFound
from pydeskd.network.service import NetworkService
from tests.unit.network.fakes import (
    FakeFirewall,
    FakeLinks,
    FakeNamespaces,
    FakeProxies,
    fake_seams,
)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, dict[str, str]]] = []

    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> None:
        self.seen.append((type, action, actor_id, dict(attributes or {})))


class Containers:
    def __init__(self) -> None:
        self.running: dict[str, str] = {}   # id -> name
        self.known: dict[str, str] = {}

    def network_target(self, ref: str) -> tuple[str, str, bool]:
        for cid, name in self.known.items():
            if ref in (cid, name):
                return cid, name, cid in self.running
        raise NotFound(f"No such container: {ref}")


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.seams = fake_seams()
        self.events = Events()
        self.containers = Containers()
        self.svc = self.open()

    def open(self) -> NetworkService:
        svc = NetworkService(self.tmp / "data", self.tmp / "exec", self.events,
                             seams=self.seams, durable=False, dns=False)
        svc.bind_containers(self.containers)
        return svc

    @property
    def links(self) -> FakeLinks:
        assert isinstance(self.seams.links, FakeLinks)
        return self.seams.links

    @property
    def firewall(self) -> FakeFirewall:
        assert isinstance(self.seams.firewall, FakeFirewall)
        return self.seams.firewall

    @property
    def proxies(self) -> FakeProxies:
        assert isinstance(self.seams.proxies, FakeProxies)
        return self.seams.proxies

    @property
    def namespaces(self) -> FakeNamespaces:
        assert isinstance(self.seams.namespaces, FakeNamespaces)
        return self.seams.namespaces

    def run(self, cid: str, name: str, host: dict[str, Any] | None = None,
            networking: dict[str, Any] | None = None,
            config: dict[str, Any] | None = None) -> Any:
        self.containers.known[cid] = name
        self.svc.register(cid, name, host or {}, networking)
        info = self.svc.attach(cid, name, host or {}, config or {})
        self.containers.running[cid] = name
        return info

    def stop(self, cid: str) -> None:
        self.svc.detach(cid)
        self.containers.running.pop(cid, None)


def cid(n: int) -> str:
    return f"c{n:03x}".ljust(64, "b")
