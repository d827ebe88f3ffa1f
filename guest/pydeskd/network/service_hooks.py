"""The container service's hooks into NetworkService (a base class of it).

What it is for: the calls ``ContainerService`` makes over a container's life -- ``register``
(create: the network mode and NetworkingConfig checked and kept), ``attach`` (start, before
``runtime create``), ``detach`` (the task is gone: exit, stop, kill, rm), ``forget`` (rm),
``rename`` -- and what its views read: ``settings`` (inspect's NetworkSettings),
``summary`` (``docker ps``), ``interfaces`` (host veths, for stats). Connection events
(``network connect``/``disconnect`` with the container) come with attach and detach, as
dockerd sends them at start and stop.

What it must never do: act on a container the container service has not registered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.network import ports, sandbox, views
from pydeskd.network.model import Attachment, EndpointConfig, Network, SandboxInfo
from pydeskd.network.requests import EndpointRequest

if TYPE_CHECKING:
    from pydeskd.network.store import NetworkStore


def network_mode(host_config: Mapping[str, Any]) -> str:
    mode = str(host_config.get("NetworkMode") or "default")
    return "bridge" if mode == "default" else mode


class ContainerHooks:
    store: NetworkStore
    lock: threading.RLock
    events: Any
    # EmbeddedDns's (annotations only: no shadowing of its methods)
    _refresh_dns: Callable[[], None]
    _set_dns_servers: Callable[[str, Sequence[str]], None]

    def network(self, ref: str) -> Network:
        raise NotImplementedError

    def _endpoint_config(self, net: Network, req: EndpointRequest) -> EndpointConfig:
        raise NotImplementedError

    def attach_locked(self, att: Attachment, hostname: str, host_config: Mapping[str, Any],
                      config: Mapping[str, Any]) -> SandboxInfo:
        raise NotImplementedError

    def register(self, cid: str, name: str, host_config: Mapping[str, Any],
                 networking_config: Mapping[str, Any] | None = None) -> None:
        """At container create. Raises NotFound ("network X not found"), InvalidArgument
        (an address or alias the network cannot take, a bad published port or HostIp)."""
        ports.requested(host_config, {})  # refused at create, as dockerd does, not at start
        mode = network_mode(host_config)
        endpoints = dict((networking_config or {}).get("EndpointsConfig") or {})
        configs: list[EndpointConfig] = []
        if mode in ("host", "none") or mode.startswith("container:"):
            if mode.startswith("container:"):
                other = mode.removeprefix("container:")
                if not other:
                    raise InvalidArgument("invalid network mode: container: needs a container")
                lookup = getattr(self, "containers", None)
                if lookup is not None:
                    lookup.network_target(other)   # NotFound: "No such container: X"
            if endpoints and mode != "none":
                raise InvalidArgument("conflicting options: network settings and "
                                      "container/host network mode")
        else:
            first = self.network(mode)
            # The CLI keys the first network's settings by the mode as given ("default").
            own = [endpoints.pop(key, None) for key in dict.fromkeys(
                (str(host_config.get("NetworkMode") or "default"), mode, first.id,
                 first.name))]
            wanted = [(first, next((e for e in own if e), None))]
            for ref, settings in endpoints.items():
                wanted.append((self.network(ref), settings))
            seen: set[str] = set()
            for net, settings in wanted:
                if net.id in seen:
                    continue
                seen.add(net.id)
                if net.driver != "bridge":
                    raise InvalidArgument("container cannot be connected to host or none "
                                          "network together with other networks")
                with self.lock:
                    configs.append(self._endpoint_config(net, EndpointRequest.from_api(
                        settings)))
        with self.lock:
            self.store.put_attachment(Attachment(cid, name.lstrip("/"), mode, tuple(configs)))

    def attach(self, cid: str, hostname: str, host_config: Mapping[str, Any],
               config: Mapping[str, Any], name: str = "") -> SandboxInfo:
        """Before ``runtime create``: the sandbox the container joins. Raises NotFound (a
        network removed meanwhile), FailedPrecondition (a host port taken: "Bind for
        0.0.0.0:18080 failed: port is already allocated", an address taken), nothing left."""
        with self.lock:
            att = self.store.attachments.get(cid)
            if att is None:
                self.register(cid, name or cid[:12], host_config, {})
                att = self.store.attachments[cid]
            # Its --dns servers are where the resolver forwards its other names (its
            # resolv.conf names only the gateway on a user network).
            self._set_dns_servers(cid, [str(s) for s in host_config.get("Dns") or ()])
            try:
                info = self.attach_locked(att, hostname, host_config, config)
            finally:
                self._refresh_dns()
            att = self.store.attachments[cid]
            connected = [self.store.networks[e.network_id] for e in
                         (att.active.endpoints if att.active else ())
                         if e.network_id in self.store.networks]
        for net in connected:
            self.events.publish("network", "connect", net.id,
                                {"container": cid, "name": net.name, "type": net.driver})
        return info

    def detach(self, cid: str) -> None:
        """The task is gone: its sandbox goes, its addresses and ports are given back."""
        with self.lock:
            att = self.store.attachments.get(cid)
            if att is None or att.active is None:
                return
            nets = [self.store.networks[e.network_id] for e in att.active.endpoints
                    if e.network_id in self.store.networks]
            try:
                sandbox.teardown(self, att)  # type: ignore[arg-type]
            finally:
                self._refresh_dns()
        for net in nets:
            self.events.publish("network", "disconnect", net.id,
                                {"container": cid, "name": net.name, "type": net.driver})

    def forget(self, cid: str) -> None:
        """At container rm."""
        self.detach(cid)
        with self.lock:
            self.store.delete_attachment(cid)
            self._refresh_dns()

    def rename(self, cid: str, name: str) -> None:
        with self.lock:
            att = self.store.attachments.get(cid)
            if att is not None:
                self.store.put_attachment(Attachment(att.cid, name.lstrip("/"), att.mode,
                                                     att.configs, att.active))
                self._refresh_dns()

    # The views below take no lock (review #13): a start holds it through proxy starts and
    # iptables calls, and ``docker ps``/``inspect`` must not wait for that. They read one
    # attachment record (replaced whole, never changed in place) and a copy of the networks
    # map, both atomic under the GIL.

    def settings(self, cid: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """``NetworkSettings`` of ``docker inspect``."""
        return views.network_settings(self.store.attachments.get(cid),
                                      dict(self.store.networks),
                                      list(config.get("ExposedPorts") or {}))

    def summary(self, cid: str, config: Mapping[str, Any]
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """``Ports`` and ``NetworkSettings`` of ``GET /containers/json``."""
        att = self.store.attachments.get(cid)
        mappings = att.active.ports if att is not None and att.active is not None else ()
        return (ports.summary_ports(list(config.get("ExposedPorts") or {}), mappings),
                views.summary_networks(att, dict(self.store.networks)))

    def interfaces(self, cid: str) -> dict[str, str]:
        """Container interface name -> host veth, for ``docker stats``."""
        att = self.store.attachments.get(cid)
        if att is None or att.active is None:
            return {}
        return {e.ifname: e.host_veth for e in att.active.endpoints}
