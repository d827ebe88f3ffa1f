"""NetworkService: pydeskd's networks and every container's place on them.

What it is for: the one object the API routes and the container service call for networking.
Networks: ``create``/``remove``/``list``/``inspect``/``prune`` (Docker's shapes, filters and
messages), ``connect``/``disconnect`` (running or stopped containers). Containers: ``register``
at create (the network mode and NetworkingConfig are checked and kept), ``attach`` before
``runtime create`` (a netns, veths, addresses, published ports; returns what the container's
/etc/hosts and /etc/resolv.conf need), ``detach`` when its task is gone, ``forget`` at rm,
``restore`` at daemon start. The embedded DNS resolver (:mod:`.dns`) listens on each user
network's gateway at a port of its own (the firewall redirects <gateway>:53 there) and asks
``lookup``/``client`` (:mod:`.service_dns`). Events of type ``network``: create, destroy, connect,
disconnect.

Side effects go through the seams of :mod:`.driver`; one re-entrant lock guards the store and
the plumbing (network operations are short: tens of milliseconds). Nothing happens to the host
before ``start()`` (called by ``restore`` at daemon start, or by the first call that needs
the plumbing), so building the service is free of side effects.

What it must never do: leave a bridge, veth, rule, netns or address behind its owner, or
half-create anything on an error.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, Protocol

from pydeskd.containerd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pydeskd.network import ipam, sandbox, views
from pydeskd.network.dns import Resolver
from pydeskd.network.driver import Names, Plumbing, Seams
from pydeskd.network.firewall import BridgeRule, PortRule, Ruleset
from pydeskd.network.model import Attachment, EndpointConfig, Network, SandboxInfo
from pydeskd.network.requests import CreateRequest, EndpointRequest
from pydeskd.network.service_dns import DnsView, EmbeddedDns, HostResolvWatch
from pydeskd.network.service_hooks import ContainerHooks

log = logging.getLogger(__name__)

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


class EventPublisher(Protocol):
    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> Any: ...


class ContainerLookup(Protocol):
    def network_target(self, ref: str) -> tuple[str, str, bool]:
        """(container ID, name without "/", running); NotFound for an unknown one."""
        ...


def _now() -> str:
    import datetime
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def _new_id() -> str:
    from pydeskd.daemon.containers.names import new_id
    return new_id()


class NetworkService(ContainerHooks, EmbeddedDns):
    def __init__(self, data_root: Path, exec_root: Path, events: EventPublisher, *,
                 seams: Seams | None = None, durable: bool = True, dns: bool = True) -> None:
        from pydeskd.network.store import NetworkStore
        self.names = Names.for_daemon(data_root, exec_root)
        self.plumbing = Plumbing(self.names, seams if seams is not None else Seams())
        self.store = NetworkStore(data_root / "network", durable=durable)
        self.events = events
        self.lock = threading.RLock()
        self.containers: ContainerLookup | None = None
        self.started = False
        self.want_dns = dns
        self.resolver: Resolver | None = None
        self._listening: dict[str, int] = {}
        self._dns_view = DnsView()
        self._dns_servers: dict[str, tuple[str, ...]] = {}
        self._load_dns_servers()
        self._resolv_watch = HostResolvWatch()
        self._predefined()
        self._refresh_dns()

    def bind_containers(self, lookup: ContainerLookup) -> None:
        self.containers = lookup

    # --- networks' records --------------------------------------------------------------

    def _predefined(self) -> None:
        have = {n.name for n in self.store.networks.values()}
        for name, driver in (("bridge", "bridge"), ("host", "host"), ("none", "null")):
            if name not in have:
                self.store.put_network(Network(
                    id=_new_id(), name=name, driver=driver, created=_now(),
                    bridge=self.names.default_bridge if name == "bridge" else "",
                    default=name == "bridge"))

    def network(self, ref: str) -> Network:
        """By full name, full ID or unique ID prefix (Docker's order). Raises NotFound."""
        with self.lock:
            nets = list(self.store.networks.values())
        for net in nets:
            if net.id == ref:
                return net
        for net in nets:
            if net.name == ref:
                return net
        found = [n for n in nets if ref and n.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(found)} matches found "
                                  f"on id)")
        raise NotFound(f"network {ref} not found")

    def default_network(self) -> Network:
        return next(n for n in self.store.networks.values() if n.default)

    # --- start, the plumbing of networks -------------------------------------------------

    def start(self) -> None:
        """Brings the default bridge and every user network up, starts the resolver (its
        port goes into the rules) and loads the firewall rules. Idempotent; after a failure
        (an iptables lock timeout) the next call does it all again."""
        with self.lock:
            if self.started:
                return
            with self.plumbing.host_lock():
                self._default_subnet()
                for net in list(self.store.networks.values()):
                    if net.driver == "bridge":
                        self.plumbing.network_up(net)
            self._start_resolver()
            self._apply_firewall()
            self.started = True   # last: whatever failed above is tried again

    def _default_subnet(self) -> None:
        """The default bridge keeps its stored subnet unless a host route now covers it and
        nothing uses it (then, like a first start, the first free default pool)."""
        net = self.default_network()
        if net.pool is not None:
            if self.plumbing.bridge_exists(net) or any(
                    a.active and a.active.endpoint(net.id) for a in
                    self.store.attachments.values()):
                return
            if not ipam.overlaps(IPv4Network(net.pool.subnet), self._foreign_routes(net)):
                return
        subnet = ipam.choose_subnet(self._taken(net.id), self._foreign_routes(net))
        from dataclasses import replace
        self.store.put_network(replace(net, pools=(ipam.make_pool(str(subnet)),)))

    def _foreign_routes(self, own: Network | None = None) -> list[IPv4Network]:
        """The host's routes, less those of this daemon's own bridges."""
        mine = {IPv4Network(n.pool.subnet) for n in self.store.networks.values()
                if n.pool is not None and (own is None or n.id != own.id or
                                           self.plumbing.bridge_exists(n))}
        return [r for r in self.plumbing.host_routes() if r not in mine]

    def _taken(self, but: str = "") -> list[IPv4Network]:
        return [IPv4Network(n.pool.subnet) for n in self.store.networks.values()
                if n.pool is not None and n.id != but]

    def network_up(self, net: Network) -> None:
        self.start()
        self.plumbing.network_up(net)

    def apply_firewall(self) -> None:
        """Replaces pydesk's rules by what the state says now (atomic; see firewall.py)."""
        with self.lock:
            if self.started:
                self._apply_firewall()

    def _apply_firewall(self) -> None:
        with self.lock:
            # A user network's <gateway>:53 goes to the resolver's port on its gateway.
            bridges = tuple(BridgeRule(n.bridge, n.pool.subnet, n.internal,
                                       gateway=n.pool.gateway if n.user_defined else "",
                                       dns_port=self.dns_port(n.pool.gateway)
                                       if n.user_defined else 0)
                            for n in sorted(self.store.networks.values(), key=lambda n: n.id)
                            if n.driver == "bridge" and n.pool is not None)
            rules: list[PortRule] = []
            for att in self.store.attachments.values():
                if att.active is None or not att.active.endpoints:
                    continue
                ep = att.active.endpoints[0]
                net = self.store.networks.get(ep.network_id)
                if net is None:
                    continue
                rules += [PortRule(p.proto, p.host_ip, p.host_port, ep.address,
                                   p.container_port, net.bridge) for p in att.active.ports]
            self.plumbing.firewall(Ruleset(self.names.chain_prefix, bridges, tuple(rules)))

    # --- the API: networks --------------------------------------------------------------

    def create(self, req: CreateRequest) -> Network:
        """Raises AlreadyExists (the name), InvalidArgument (bad subnet, gateway, range),
        FailedPrecondition (overlap, pools exhausted). Nothing is left on an error."""
        self.start()
        with self.lock:
            if any(n.name == req.name for n in self.store.networks.values()):
                raise AlreadyExists(f"network with name {req.name} already exists")
            wanted = [ipam.make_pool(p.subnet, p.gateway, p.ip_range, dict(p.aux))
                      for p in req.pools]
            net_id = _new_id()
            with self.plumbing.host_lock():
                if wanted:
                    subnet = IPv4Network(wanted[0].subnet)
                    if ipam.overlaps(subnet, self._taken()):
                        raise FailedPrecondition("invalid pool request: Pool overlaps with "
                                                 "other one on this address space")
                    pools = tuple(wanted)
                else:
                    pools = (ipam.make_pool(str(ipam.choose_subnet(
                        self._taken(), self._foreign_routes()))),)
                net = Network(id=net_id, name=req.name, driver="bridge", created=_now(),
                              bridge=self._bridge_name(req, net_id), pools=pools,
                              internal=req.internal, attachable=req.attachable,
                              labels=dict(req.labels), options=dict(req.options),
                              ipam_options=dict(req.ipam_options))
                self.store.put_network(net)
                try:
                    self.plumbing.network_up(net)
                    self._listen(net)    # before the rules: they DNAT to its port
                    self.apply_firewall()
                except BaseException:
                    self._unlisten(net)
                    self.store.delete_network(net.id)
                    with contextlib.suppress(Exception):
                        self.plumbing.network_down(net)
                    with contextlib.suppress(Exception):
                        self.apply_firewall()
                    raise
                finally:
                    self._refresh_dns()
        self.events.publish("network", "create", net.id, {"name": net.name, "type": "bridge"})
        return net

    def _bridge_name(self, req: CreateRequest, net_id: str) -> str:
        """``-o com.docker.network.bridge.name=X`` or ``pd-<12 hex>``; a name that is taken
        (a link of the host's, another network's) is refused: pydesk deletes its bridges."""
        name = req.options.get(BRIDGE_NAME_OPTION, "")
        if not name:
            return Names.user_bridge(net_id)
        if len(name) > 15 or not all(c.isalnum() or c in "-_" for c in name):
            raise InvalidArgument(f"invalid bridge name {name!r}: up to 15 letters, digits, "
                                  f"'-' or '_'")
        if any(n.bridge == name for n in self.store.networks.values()) or \
                self.plumbing.seams.links.link_exists(name):
            raise FailedPrecondition(f"bridge name {name} is already in use")
        return name

    def remove(self, ref: str) -> None:
        """Raises NotFound, FailedPrecondition (predefined, or containers still on it)."""
        net = self.network(ref)
        with self.lock:
            if net.predefined:
                raise FailedPrecondition(f"{net.name} is a pre-defined network and cannot be "
                                         f"removed")
            # As dockerd: running containers block it; a stopped one that names it keeps the
            # name in its settings and fails to start ("network X not found") until
            # disconnected or connected elsewhere.
            users = [a for a in self.store.attachments.values()
                     if a.active is not None and a.active.endpoint(net.id) is not None]
            if users:
                raise FailedPrecondition(f"error while removing network: network {net.name} "
                                         f"id {net.id} has active endpoints")
            self._unlisten(net)
            # The bridge before the record: a daemon killed in between finds the record and
            # brings the bridge back at start, rather than leaving a bridge nobody owns.
            self.plumbing.network_down(net)
            self.store.delete_network(net.id)
            self._refresh_dns()
            if self.started:
                self.apply_firewall()
        self.events.publish("network", "destroy", net.id, {"name": net.name, "type": "bridge"})

    def _in_use(self, net: Network) -> bool:
        return any(a.config(net.id) for a in self.store.attachments.values())

    def containers_of(self, net: Network) -> dict[str, dict[str, str]]:
        out = {}
        for att in self.store.attachments.values():
            ep = att.active.endpoint(net.id) if att.active is not None else None
            if ep is not None:
                out[att.cid] = views.container_entry(att, ep)
        return out

    def list(self, filters: Mapping[str, Sequence[str]] | None = None
             ) -> builtins.list[dict[str, Any]]:
        filters = filters or {}
        views.check_filters(filters)
        with self.lock:
            return [views.network_json(n, self.containers_of(n))
                    for n in sorted(self.store.networks.values(), key=lambda n: n.created)
                    if views.matches(n, filters, self._in_use(n))]

    def inspect(self, ref: str) -> dict[str, Any]:
        net = self.network(ref)
        with self.lock:
            return views.network_json(net, self.containers_of(net))

    def prune(self, filters: Mapping[str, Sequence[str]] | None = None) -> builtins.list[str]:
        """``docker network prune``: user networks no container uses. Names removed."""
        filters = dict(filters or {})
        views.check_filters(filters)
        removed = []
        with self.lock:
            nets = [n for n in self.store.networks.values() if n.user_defined
                    and not self._in_use(n) and views.matches(n, filters, False)]
        for net in nets:
            with contextlib.suppress(NotFound, FailedPrecondition):
                self.remove(net.id)
                removed.append(net.name)
        return removed

    def connect(self, net_ref: str, container_ref: str, req: EndpointRequest) -> None:
        """Raises NotFound, InvalidArgument, FailedPrecondition (already connected, shares a
        namespace, address taken)."""
        net = self.network(net_ref)
        cid, name, running = self._target(container_ref)
        with self.lock:
            att = self.store.attachments.get(cid)
            if att is None:
                raise NotFound(f"No such container: {container_ref}")
            if att.shares_netns or att.mode == "none" or net.driver != "bridge":
                raise FailedPrecondition("container sharing network namespace with another "
                                         "container or host cannot be connected to any other "
                                         "network")
            if att.config(net.id) is not None:
                raise FailedPrecondition(f"endpoint with name {name} already exists in network "
                                         f"{net.name}")
            cfg = self._endpoint_config(net, req)
            att = Attachment(att.cid, att.name, att.mode, (*att.configs, cfg), att.active)
            if running and att.active is not None and att.active.netns:
                try:
                    att = sandbox.join_running(self, att, net)
                    self.store.put_attachment(att)
                finally:
                    self._refresh_dns()
                self.apply_firewall()
            else:
                self.store.put_attachment(att)
        self.events.publish("network", "connect", net.id,
                            {"container": cid, "name": net.name, "type": "bridge"})

    def disconnect(self, net_ref: str, container_ref: str, force: bool = False) -> None:
        net = self.network(net_ref)
        cid, _, _ = self._target(container_ref, must_exist=not force)
        with self.lock:
            att = self.store.attachments.get(cid)
            if att is None or att.config(net.id) is None:
                raise FailedPrecondition(f"container {cid} is not connected to network "
                                         f"{net.name}")
            try:
                att = sandbox.leave(self, att, net)
                att = Attachment(att.cid, att.name, att.mode,
                                 tuple(c for c in att.configs if c.network_id != net.id),
                                 att.active)
                self.store.put_attachment(att)
            finally:
                self._refresh_dns()
            self.apply_firewall()
        self.events.publish("network", "disconnect", net.id,
                            {"container": cid, "name": net.name, "type": "bridge"})

    def _target(self, ref: str, must_exist: bool = True) -> tuple[str, str, bool]:
        if self.containers is None:
            raise FailedPrecondition("the container service is not available")
        try:
            return self.containers.network_target(ref)
        except NotFound:
            if must_exist:
                raise
            with self.lock:
                for att in self.store.attachments.values():
                    if att.cid.startswith(ref) or att.name == ref.lstrip("/"):
                        return att.cid, att.name, False
            raise

    def _endpoint_config(self, net: Network, req: EndpointRequest) -> EndpointConfig:
        """Checks what a container asks of one network (Docker's messages)."""
        if req.ipv4 and not net.user_defined:
            raise InvalidArgument("user specified IP address is supported on user defined "
                                  "networks only")
        if req.aliases and not net.user_defined:
            raise InvalidArgument("network-scoped alias is supported only for containers in "
                                  "user defined networks")
        if req.ipv4 and net.pool is not None:
            addr = ipam.parse_address(req.ipv4)
            if addr not in IPv4Network(net.pool.subnet):
                raise InvalidArgument(f"invalid address {req.ipv4}: it does not belong to any "
                                      f"of this network's subnets")
            if req.ipv4 in self.store.addresses_in_use(net.id) or addr in ipam.reserved(
                    net.pool):
                raise FailedPrecondition("Address already in use")
        return EndpointConfig(net.id, req.aliases, req.ipv4, req.mac)

    # --- the container service's hooks (service_hooks.py) and the end ---------------------

    def attach_locked(self, att: Attachment, hostname: str, host_config: Mapping[str, Any],
                      config: Mapping[str, Any]) -> SandboxInfo:
        self.start()
        return sandbox.attach(self, att, hostname, host_config, config)

    def restore(self, running: Collection[str]) -> None:
        """At daemon start, after the container service found its running containers: what
        tasks that are gone held is given back, proxies that died are restarted, orphans
        (netns files, veths, proxies nobody owns) go, and the rules are rebuilt."""
        self.start()
        with self.lock:
            try:
                sandbox.restore(self, set(running))
            finally:
                self._refresh_dns()
            self.apply_firewall()

    def close(self) -> None:
        """Stops the resolver; bridges, rules and running containers' sandboxes stay (live
        restore)."""
        with self.lock:
            if self.resolver is not None:
                with contextlib.suppress(Exception):
                    self.resolver.close()
                self.resolver = None
                self._listening.clear()
