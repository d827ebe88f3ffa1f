"""The container-create rewriter: host paths and host addresses in, guest ones out.

What it is for: ``POST /containers/create`` arrives at the host socket written for the host (bind
sources are host paths, published ports name host addresses). The guest daemon must see guest
paths (the synced copies, via a :class:`BindResolver`) and publish on its own address, while the
user's original port bindings travel in a label for the port forwarder. Pure: a dict in, a new
dict out; the only effect is whatever the resolver does (it may block until a path is synced).

A missing source is created as dockerd does (the resolver's ``create=True``): for every
``Binds`` entry (``-v /missing:/x``) and for a ``Mounts`` bind with
``BindOptions.CreateMountpoint`` (Compose's short syntax); any other ``Mounts`` bind keeps
dockerd's error.

What it must never do: touch a named volume, a tmpfs or any field it does not own; guess at a
source it cannot classify (a relative or Windows path is a clear error, as the daemon would give);
change the input dict in place.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from pydesk.proxy.labels import HOST_PORT_BINDINGS_LABEL, guest_port_bindings
from pydesk.sync.errors import HostPathNotFound
from pydeskd.vmcontract import GUEST_API_SOCKET

DOCKER_SOCKETS = frozenset({"/var/run/docker.sock", "/run/docker.sock"})
"""Where clients expect the Docker socket; a bind of it means "the engine's own socket"."""

# Docker's volume-name rule (daemon/names.RestrictedNamePattern).
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


class RewriteError(Exception):
    """A create request the proxy cannot translate; ``status`` is the HTTP status to return."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class BindResolver(Protocol):
    """Host path -> guest path of its synced copy (host/pydesk/sync's SyncManager)."""

    def guest_path(self, host_path: str, *, create: bool = False) -> str:
        """Blocks until ``host_path`` is synced; ``create``: a missing path is made as a
        directory first (dockerd's ``-v``). Raises with a message for the user."""
        ...


def resolver_error(exc: Exception) -> RewriteError:
    """What a resolver's exception becomes for the client: its message (and its ``hint``, if it
    has one, as ``pydesk.sync``'s errors do); its ``status`` attribute if it has one, else 400
    for a path the user named wrongly (missing, not a directory, invalid) and 500 otherwise."""
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        user_fault = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError)
        status = 400 if isinstance(exc, user_fault) else 500
    message = str(exc) or type(exc).__name__
    hint = getattr(exc, "hint", "")
    if isinstance(hint, str) and hint:
        message = f"{message} ({hint})"
    return RewriteError(message, status)


class _Sources:
    """Maps one bind source (host side) to its guest side, with the docker-socket rule."""

    def __init__(self, resolver: BindResolver | None, sockets: Collection[str]) -> None:
        self.resolver = resolver
        self.sockets = frozenset(sockets) | DOCKER_SOCKETS

    def guest(self, source: str, what: str, *, create: bool = False) -> str:
        """The guest path; ``create``: a missing source directory is made (dockerd's ``-v``).
        Raises RewriteError; HostPathNotFound (a missing source) as the resolver raised it."""
        if _WINDOWS_PATH.match(source):
            raise RewriteError(f"{what}: {source!r} is a Windows path; this engine's host "
                               "socket takes absolute POSIX paths only")
        if not source.startswith("/"):
            raise RewriteError(f"{what}: source {source!r} is not an absolute path")
        if source.rstrip("/") in self.sockets:
            return GUEST_API_SOCKET
        if self.resolver is None:
            return source
        try:
            return self.resolver.guest_path(source, create=create)
        except (HostPathNotFound, FileNotFoundError):
            raise
        except Exception as exc:  # the resolver is injected: whatever it raises goes to the user
            raise resolver_error(exc) from exc


def rewrite_bind(spec: str, sources: _Sources) -> str:
    """``src:dst[:opts]`` with a host-path source -> the same with the guest path."""
    what = f"invalid bind {spec!r}"
    if _WINDOWS_PATH.match(spec):
        raise RewriteError(f"{what}: Windows paths are not supported; use an absolute POSIX path")
    parts = spec.split(":")
    if len(parts) == 1:
        return spec  # a target alone: an anonymous volume, no host path in it
    if len(parts) > 3 or not parts[0] or not parts[1]:
        raise RewriteError(f"{what}: expected SOURCE:TARGET[:OPTIONS]")
    source = parts[0]
    if not source.startswith("/"):
        if _VOLUME_NAME.match(source):
            return spec  # a named volume: the guest daemon's business
        raise RewriteError(f"{what}: source {source!r} is neither an absolute path nor a "
                           "volume name")
    try:
        guest = sources.guest(source, what, create=True)
    except (HostPathNotFound, FileNotFoundError) as exc:  # a resolver that cannot create
        raise resolver_error(exc) from exc
    return ":".join([guest, *parts[1:]])


def _rewrite_mount(mount: Any, sources: _Sources) -> Any:
    if not isinstance(mount, Mapping) or str(mount.get("Type", "")).lower() != "bind":
        return mount
    source = mount.get("Source")
    if not isinstance(source, str) or not source:
        raise RewriteError("invalid mount: a bind mount needs a Source")
    options = mount.get("BindOptions")
    create = isinstance(options, Mapping) and options.get("CreateMountpoint") is True
    try:
        guest = sources.guest(source, f"invalid mount source {source!r}", create=create)
    except (HostPathNotFound, FileNotFoundError) as exc:
        if create:
            raise resolver_error(exc) from exc
        # dockerd's words for a --mount type=bind whose source is missing
        raise RewriteError('invalid mount config for type "bind": bind source path does not '
                           f"exist: {source}") from exc
    return {**mount, "Source": guest}


def rewrite_create(body: Mapping[str, Any], resolver: BindResolver | None,
                   own_sockets: Collection[str] = ()) -> dict[str, Any]:
    """The create body for the guest daemon. ``own_sockets``: paths that also mean "the Docker
    socket" (the proxy's own). Raises RewriteError (status 400/500) with a message for the user."""
    out: dict[str, Any] = copy.deepcopy(dict(body))
    host_config = out.get("HostConfig")
    bindings = host_config.get("PortBindings") if isinstance(host_config, dict) else None
    # Always stamped, {} when there are no bindings: the container's label overrides an image's
    # label of the same name, so an image can never tell the forwarder to widen an address.
    labels = out.get("Labels")
    labels = dict(labels) if isinstance(labels, dict) else {}
    labels[HOST_PORT_BINDINGS_LABEL] = json.dumps(
        bindings if isinstance(bindings, dict) else {}, sort_keys=True)
    out["Labels"] = labels
    if not isinstance(host_config, dict):
        return out
    sources = _Sources(resolver, own_sockets)
    binds = host_config.get("Binds")
    if isinstance(binds, list):
        host_config["Binds"] = [rewrite_bind(b, sources) if isinstance(b, str) else b
                                for b in binds]
    mounts = host_config.get("Mounts")
    if isinstance(mounts, list):
        host_config["Mounts"] = [_rewrite_mount(m, sources) for m in mounts]
    if isinstance(bindings, dict) and bindings:
        host_config["PortBindings"] = guest_port_bindings(bindings)
    return out


def rewrite_create_body(raw: bytes, resolver: BindResolver | None,
                        own_sockets: Collection[str] = ()) -> bytes:
    """The same on the wire. A body that is not a JSON object goes through unchanged: the
    daemon's own error for it is the one the user should see."""
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        return raw
    if not isinstance(body, dict):
        return raw
    return json.dumps(rewrite_create(body, resolver, own_sockets)).encode()
