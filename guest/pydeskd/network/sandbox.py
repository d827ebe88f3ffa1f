"""A container's network sandbox: what ``attach``, ``detach`` and ``restore`` of the service do.

What it is for: building a running task's networking -- a netns pinned under the exec root,
one veth per network (addresses from IPAM, recorded in the store *before* any link exists, so a
crash can leak nothing that restore cannot find and give back), published ports (a userland
proxy per binding holds the host port first: a taken port fails here, before the container
starts, with everything undone) -- and taking it down again. The caller holds the service's
lock.

What it must never do: leave a half-built sandbox behind an error: every failure tears down
whatever this call made, and the store says nothing is active.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydeskd.containerd.errors import FailedPrecondition, NotFound
from pydeskd.network import ipam, ports
from pydeskd.network.driver import Names
from pydeskd.network.model import Active, Attachment, Endpoint, Network, PortMapping, SandboxInfo
from pydeskd.network.proxies import pid_file

if TYPE_CHECKING:
    from pydeskd.network.service import NetworkService

log = logging.getLogger(__name__)


def attach(svc: NetworkService, att: Attachment, hostname: str,
           host_config: Mapping[str, Any], config: Mapping[str, Any]) -> SandboxInfo:
    if att.active is not None:
        teardown(svc, att)
        att = svc.store.attachments[att.cid]
    if att.mode == "host":
        return SandboxInfo("", host_mode=True)
    if att.mode.startswith("container:"):
        return _joined(svc, att.mode.removeprefix("container:"))
    links = _links(svc, att, host_config.get("Links") or [])  # checked before anything is made
    netns = svc.plumbing.sandbox_create(att.cid)
    active = Active(str(netns))
    svc.store.put_attachment(att.with_active(active))
    try:
        for cfg in att.configs:
            active = _join(svc, att, active, svc.network(cfg.network_id))
        if _publishes(svc, active) and att.mode != "none":
            active = _publish(svc, att, active, ports.requested(host_config, config))
        svc.apply_firewall()
    except BaseException:
        teardown(svc, svc.store.attachments[att.cid])
        raise
    info = sandbox_info(svc, svc.store.attachments[att.cid], hostname)
    return replace(info, hosts=(*info.hosts, *links)) if links else info


def _links(svc: NetworkService, att: Attachment, links: Sequence[str]
           ) -> list[tuple[str, tuple[str, ...]]]:
    """``--link name:alias``: /etc/hosts lines for running containers on a network this one is
    on too (dockerd's legacy links, without their environment variables). Raises NotFound,
    FailedPrecondition (the linked container is not running)."""
    lookup = svc.containers
    mine = {c.network_id for c in att.configs}
    out: list[tuple[str, tuple[str, ...]]] = []
    for link in links:
        ref, _, alias = str(link).lstrip("/").partition(":")
        if lookup is None or not ref:
            continue
        cid, name, running = lookup.network_target(ref)
        other = svc.store.attachments.get(cid)
        if not running or other is None or other.active is None:
            raise FailedPrecondition(f"Cannot link to a non running container: /{name} AS "
                                     f"/{att.name}/{alias.rsplit('/', 1)[-1] or name}")
        ep = next((e for e in other.active.endpoints if e.network_id in mine), None)
        if ep is not None:
            alias = alias.rsplit("/", 1)[-1]
            out.append((ep.address, tuple(dict.fromkeys(
                n for n in (alias, name, cid[:12]) if n))))
    return out


def sandbox_info(svc: NetworkService, att: Attachment, hostname: str) -> SandboxInfo:
    active = att.active
    assert active is not None
    if not active.endpoints:
        return SandboxInfo(active.netns)
    first = active.endpoints[0]
    names = tuple(dict.fromkeys(n for n in (hostname, att.name) if n))
    net = svc.store.networks.get(first.network_id)
    nameservers = (first.gateway,) if net is not None and net.user_defined else None
    return SandboxInfo(active.netns, ((first.address, names),), nameservers,
                       gateway=first.gateway)


def _joined(svc: NetworkService, ref: str) -> SandboxInfo:
    """``--network container:X``: X's namespace, and X's resolver and /etc/hosts lines, so
    names on X's user networks resolve here too (Docker shares X's resolv.conf and hosts)."""
    other = svc.store.attachments[_joined_cid(svc, ref)]
    assert other.active is not None
    if not other.active.endpoints:
        return SandboxInfo(other.active.netns)
    return sandbox_info(svc, other, other.cid[:12])


def _joined_cid(svc: NetworkService, ref: str) -> str:
    lookup = svc.containers
    if lookup is None:
        raise FailedPrecondition("container network modes need the container service")
    cid, _, running = lookup.network_target(ref)
    other = svc.store.attachments.get(cid)
    if not running or other is None or other.active is None:
        raise FailedPrecondition(f"cannot join network of a non running container: {ref}")
    if other.mode == "host" or not other.active.netns:
        raise FailedPrecondition(f"cannot join the network of container {ref}: it uses the "
                                 f"host's network")
    return cid


def _join(svc: NetworkService, att: Attachment, active: Active, net: Network) -> Active:
    """One more endpoint: address recorded first, then the veth."""
    cfg = att.config(net.id)
    pool = net.pool
    if cfg is None or pool is None:
        return active
    svc.network_up(net)
    address = ipam.allocate(pool, svc.store.addresses_in_use(net.id, but=att.cid), cfg.ipv4)
    used = {e.ifname for e in active.endpoints}
    ifname = next(f"eth{n}" for n in range(len(used) + 1) if f"eth{n}" not in used)
    ep = Endpoint(net.id, secrets.token_hex(32), str(address),
                  IPv4Network(pool.subnet).prefixlen, pool.gateway,
                  cfg.mac or ipam.mac_for(str(address)), ifname,
                  Names.host_veth(att.cid, net.id))
    active = Active(active.netns, (*active.endpoints, ep), active.ports)
    svc.store.put_attachment(att.with_active(active))
    # The name is derived, so a veth a crash left in the host's namespace would collide.
    svc.plumbing.seams.links.delete_link(ep.host_veth)
    svc.plumbing.seams.links.add_veth(
        ep.host_veth, net.bridge, netns=active.netns, ifname=ep.ifname, address=ep.address,
        prefixlen=ep.prefixlen, mac=ep.mac, gateway=ep.gateway,
        default_route=len(active.endpoints) == 1)
    return active


def _publishes(svc: NetworkService, active: Active) -> bool:
    """Whether ports are published: there is an endpoint on a network with a way out. On
    ``--internal`` networks only, Docker publishes nothing (no gateway endpoint)."""
    nets = [svc.store.networks.get(e.network_id) for e in active.endpoints]
    return any(n is not None and not n.internal for n in nets)


def _publish(svc: NetworkService, att: Attachment, active: Active,
             wanted: list[ports.Wanted]) -> Active:
    ep = active.endpoints[0]
    taken = {(p.proto, p.host_port) for a in svc.store.attachments.values() if a.active
             for p in a.active.ports}
    for want in wanted:
        mapping = _bind(svc, att, ep, want, taken)
        taken.add((mapping.proto, mapping.host_port))
        active = Active(active.netns, active.endpoints, (*active.ports, mapping))
        svc.store.put_attachment(att.with_active(active))
    return active


def _bind(svc: NetworkService, att: Attachment, ep: Endpoint, want: ports.Wanted,
          taken: Collection[tuple[str, int]]) -> PortMapping:
    """A proxy on the first free candidate port. A fixed port that is taken fails with the
    proxy's error (PortInUse); an ephemeral one moves on to the next candidate."""
    host_ip = ports.shown_host_ip(want.host_ip)
    last: FailedPrecondition | None = None
    tries = 0
    for port in ports.candidates(want, taken):
        # "" (every address) stays apart from an explicit 0.0.0.0 (IPv4 only) or :: (IPv6
        # only), as Docker 27+ binds only the family given.
        mapping = PortMapping(want.proto, want.container_port, want.host_ip, port)
        try:
            svc.plumbing.seams.proxies.start(mapping, ep.address, _pid_file(svc, att, mapping))
            return mapping
        except FailedPrecondition as exc:
            last = exc
            tries += 1
            if want.low == want.high != 0 or tries > 64:
                raise
    if last is not None:
        raise last
    raise FailedPrecondition(f"Bind for {host_ip}:{want.low} failed: port is already "
                             f"allocated")


def _pid_file(svc: NetworkService, att: Attachment, mapping: PortMapping) -> Path:
    return pid_file(svc.names.proxies_dir, att.cid, mapping)


def teardown(svc: NetworkService, att: Attachment) -> None:
    """Everything the running task held goes: proxies, veths, the netns, the addresses (the
    store is written last, so a crash in between leaves it for restore to finish)."""
    active = att.active
    if active is None:
        return
    for mapping in active.ports:
        with contextlib.suppress(Exception):
            svc.plumbing.seams.proxies.stop(_pid_file(svc, att, mapping))
    for ep in active.endpoints:
        with contextlib.suppress(Exception):
            svc.plumbing.seams.links.delete_link(ep.host_veth)
    if active.netns and active.netns.startswith(str(svc.names.netns_dir)):
        with contextlib.suppress(OSError):
            svc.plumbing.sandbox_delete(Path(active.netns))
    svc.store.put_attachment(att.with_active(None))
    if active.ports:
        try:
            svc.apply_firewall()
        except Exception:  # the next apply (any change, or the next start) replaces them
            log.exception("removing the port rules of %s failed", att.cid[:12])


def leave(svc: NetworkService, att: Attachment, net: Network) -> Attachment:
    """One endpoint of a running container goes (``docker network disconnect``)."""
    active = att.active
    ep = active.endpoint(net.id) if active is not None else None
    if active is None or ep is None:
        return att
    first = active.endpoints[0].network_id == net.id
    for mapping in active.ports if first else ():
        with contextlib.suppress(Exception):
            svc.plumbing.seams.proxies.stop(_pid_file(svc, att, mapping))
    svc.plumbing.seams.links.delete_link(ep.host_veth)
    kept = tuple(e for e in active.endpoints if e.network_id != net.id)
    if first and kept:
        # The default route went with the first network's interface: the next one takes it,
        # as dockerd moves the gateway.
        with contextlib.suppress(Exception):
            svc.plumbing.seams.links.set_default_route(active.netns, kept[0].gateway)
    left = Active(active.netns, kept, active.ports)
    return att.with_active(_republish(svc, att, left) if first else left)


def _republish(svc: NetworkService, att: Attachment, active: Active) -> Active:
    """The ports of a container whose first endpoint went: published again, same host ports,
    to the endpoint now first (as dockerd moves them with the gateway endpoint); none when
    no endpoint with a way out is left. A port that cannot be bound again is dropped."""
    if not active.ports or not active.endpoints or not _publishes(svc, active):
        return replace(active, ports=())
    ep = active.endpoints[0]
    kept: list[PortMapping] = []
    for mapping in active.ports:
        try:
            svc.plumbing.seams.proxies.start(mapping, ep.address, _pid_file(svc, att, mapping))
            kept.append(mapping)
        except Exception:
            log.exception("publishing %s of %s again failed", mapping.key, att.cid[:12])
    return replace(active, ports=tuple(kept))


def join_running(svc: NetworkService, att: Attachment, net: Network) -> Attachment:
    """One more endpoint for a running container (``docker network connect``)."""
    assert att.active is not None
    try:
        active = _join(svc, att, att.active, net)
    except BaseException:
        current = svc.store.attachments[att.cid]
        if current.active is not None and current.active.endpoint(net.id) is not None:
            ep = current.active.endpoint(net.id)
            assert ep is not None
            with contextlib.suppress(Exception):
                svc.plumbing.seams.links.delete_link(ep.host_veth)
        # The connection never happened: neither its wish nor its endpoint stays.
        svc.store.put_attachment(Attachment(
            att.cid, att.name, att.mode,
            tuple(c for c in att.configs if c.network_id != net.id), att.active))
        raise
    return att.with_active(active)


def restore(svc: NetworkService, running: Collection[str]) -> None:
    """At daemon start: give back what tasks that are gone held; for running containers,
    restart port proxies that died (their netns and veths live on with the container); drop
    what nobody owns (netns files, veths on our bridges, proxies)."""
    for att in list(svc.store.attachments.values()):
        if att.active is None:
            continue
        if att.cid not in running:
            teardown(svc, att)
            continue
        current = _drop_phantom_endpoints(svc, att)
        assert current.active is not None
        for mapping in current.active.ports:
            path = _pid_file(svc, current, mapping)
            if svc.plumbing.seams.proxies.alive(path):
                continue
            ep = current.active.endpoints[0] if current.active.endpoints else None
            if ep is None:
                continue
            try:
                svc.plumbing.seams.proxies.start(mapping, ep.address, path)
            except Exception:
                log.exception("restarting the port proxy of %s for %s failed",
                              att.cid[:12], mapping.key)
    _drop_orphans(svc)


def _drop_phantom_endpoints(svc: NetworkService, att: Attachment) -> Attachment:
    """A running container's endpoints whose host veth is gone (the daemon died between
    recording a ``network connect``'s endpoint and making its veth, or the link was deleted
    behind our back) are dropped with their connection, so their addresses are free again.
    Ports on a dropped first endpoint move to the next one."""
    active = att.active
    assert active is not None
    links = svc.plumbing.seams.links
    gone = {e.network_id for e in active.endpoints if not links.link_exists(e.host_veth)}
    if not gone:
        return att
    log.warning("container %s: dropping endpoints without a veth on %s", att.cid[:12],
                ", ".join(sorted(n[:12] for n in gone)))
    first_gone = active.endpoints[0].network_id in gone
    kept = Active(active.netns, tuple(e for e in active.endpoints if e.network_id not in gone),
                  active.ports)
    if first_gone:
        for mapping in active.ports:
            with contextlib.suppress(Exception):
                svc.plumbing.seams.proxies.stop(_pid_file(svc, att, mapping))
        if kept.endpoints:
            with contextlib.suppress(Exception):
                links.set_default_route(kept.netns, kept.endpoints[0].gateway)
        kept = _republish(svc, att, kept)
    att = Attachment(att.cid, att.name, att.mode,
                     tuple(c for c in att.configs if c.network_id not in gone), kept)
    svc.store.put_attachment(att)
    return att


def _drop_orphans(svc: NetworkService) -> None:
    owned_ns = {a.active.netns for a in svc.store.attachments.values() if a.active}
    owned_veths = {e.host_veth for a in svc.store.attachments.values() if a.active
                   for e in a.active.endpoints}
    if svc.names.netns_dir.is_dir():
        for path in svc.names.netns_dir.iterdir():
            if str(path) not in owned_ns:
                with contextlib.suppress(OSError):
                    svc.plumbing.sandbox_delete(path)
    for net in svc.store.networks.values():
        if net.driver != "bridge" or not net.bridge:
            continue
        with contextlib.suppress(Exception):
            for port in svc.plumbing.seams.links.bridge_ports(net.bridge):
                if port.startswith("pdv") and port not in owned_veths:
                    svc.plumbing.seams.links.delete_link(port)
    if svc.names.proxies_dir.is_dir():
        owned_pids = {_pid_file(svc, a, m) for a in svc.store.attachments.values()
                      if a.active for m in a.active.ports}
        for path in svc.names.proxies_dir.glob("*.pid"):
            if path not in owned_pids:
                with contextlib.suppress(Exception):
                    svc.plumbing.seams.proxies.stop(path)


def endpoint_of(att: Attachment | None, net_id: str) -> Endpoint:
    if att is None or att.active is None or att.active.endpoint(net_id) is None:
        raise NotFound("endpoint not found")
    ep = att.active.endpoint(net_id)
    assert ep is not None
    return ep
