"""``pydesk run``'s flags -> the ``POST /containers/create`` body, as the docker CLI builds it.

Pure functions (unit-tested): :class:`RunOptions` holds the flags as given (files such as
``--env-file`` already read by the command), :func:`create_body` returns the body or raises
ValueError with docker's wording. What it must never do: talk to an engine or read files.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunOptions:
    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    env: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    network: str | None = None
    restart: str | None = None
    detach: bool = False
    remove: bool = False
    interactive: bool = False
    tty: bool = False
    environ: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    mounts: tuple[str, ...] = ()
    publish_all: bool = False
    expose: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    hostname: str | None = None
    env_file_lines: tuple[str, ...] = ()
    add_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    network_aliases: tuple[str, ...] = ()
    init: bool = False
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    memory: str | None = None
    cpus: str | None = None
    read_only: bool = False
    tmpfs: tuple[str, ...] = ()
    stop_signal: str | None = None


def parse_env(items: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """``-e K=V`` as given; ``-e K`` takes K from the caller's environment (dropped if unset)."""
    return [i if "=" in i else f"{i}={environ[i]}" for i in items if "=" in i or i in environ]


def parse_env_file(lines: Sequence[str]) -> list[str]:
    """``--env-file`` lines: blank lines and ``#`` comments skipped, ``K=V`` kept verbatim
    (no quotes removed, as docker), a bare ``K`` as ``-e K``."""
    return [line.lstrip() for line in (raw.rstrip("\r\n") for raw in lines)
            if line.strip() and not line.lstrip().startswith("#")]


def parse_publish(spec: str) -> tuple[str, dict[str, str]]:
    """``[ip:][host:]container[/proto]`` -> ("80/tcp", {"HostIp": ip, "HostPort": host})."""
    rest, _, proto = spec.partition("/")
    if rest.startswith("["):  # an IPv6 host address: [::1]:8080:80
        ip, _, rest = rest[1:].partition("]")
        rest = rest.lstrip(":")
        parts = ["", *rest.split(":")] if rest.count(":") == 1 else rest.split(":")
        parts[0] = ip
    else:
        parts = rest.split(":")
    if len(parts) > 3 or not parts[-1].isdigit():
        raise ValueError(f"invalid publish spec: {spec}")
    parts = [""] * (3 - len(parts)) + parts
    return f"{parts[2]}/{proto or 'tcp'}", {"HostIp": parts[0], "HostPort": parts[1]}


def host_path(source: str, cwd: str) -> str:
    """docker resolves relative host paths (``./x``, ``../x``, ``~/x``) against the cwd."""
    if source.startswith((".", "~")):
        return os.path.normpath(os.path.join(cwd, os.path.expanduser(source)))
    return source


def parse_volume(spec: str, cwd: str) -> tuple[str | None, str]:
    """``-v`` -> (a Binds entry, or None for an anonymous volume; the container path)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return None, parts[0]
    return ":".join([host_path(parts[0], cwd), *parts[1:]]), parts[1]


def _true(value: str, key: str) -> bool:
    if value.lower() in ("", "1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise ValueError(f"invalid value for {key}: {value}")


def parse_mount(spec: str, cwd: str) -> dict[str, Any]:
    """``--mount type=bind|volume|tmpfs,source=..,target=..[,readonly][,...]`` -> a Mount."""
    fields: dict[str, str] = {}
    volume_opts: dict[str, str] = {}
    for item in _csv(spec):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if key == "volume-opt":
            opt_key, _, opt_value = value.partition("=")
            volume_opts[opt_key] = opt_value
        else:
            fields[key] = value if eq else ""
    kind = fields.pop("type", "volume")
    if kind not in ("bind", "volume", "tmpfs"):
        raise ValueError(f"invalid mount type {kind!r}: want bind, volume or tmpfs")
    source = fields.pop("source", fields.pop("src", ""))
    target = fields.pop("target", fields.pop("destination", fields.pop("dst", "")))
    if not target:
        raise ValueError("invalid argument for --mount: target is required")
    mount: dict[str, Any] = {"Type": kind, "Target": target}
    if source:
        mount["Source"] = host_path(source, cwd) if kind == "bind" else source
    elif kind == "bind":
        raise ValueError("invalid argument for --mount: source is required for a bind mount")
    for key in ("readonly", "ro"):
        if key in fields:
            mount["ReadOnly"] = _true(fields.pop(key), key)
    if kind == "bind" and "bind-propagation" in fields:
        mount["BindOptions"] = {"Propagation": fields.pop("bind-propagation")}
    if kind == "volume":
        options: dict[str, Any] = {}
        if "volume-nocopy" in fields:
            options["NoCopy"] = _true(fields.pop("volume-nocopy"), "volume-nocopy")
        if volume_opts:
            options["DriverConfig"] = {"Options": volume_opts}
        if options:
            mount["VolumeOptions"] = options
    if kind == "tmpfs":
        tmpfs: dict[str, Any] = {}
        if "tmpfs-size" in fields:
            tmpfs["SizeBytes"] = parse_bytes(fields.pop("tmpfs-size"))
        if "tmpfs-mode" in fields:
            tmpfs["Mode"] = int(fields.pop("tmpfs-mode"), 8)
        if tmpfs:
            mount["TmpfsOptions"] = tmpfs
    if fields:
        raise ValueError(f"invalid argument for --mount: unknown field {next(iter(fields))!r}")
    return mount


def _csv(text: str) -> list[str]:
    """docker's --mount is CSV: quoted fields may hold commas."""
    import csv

    return next(csv.reader([text]))


_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmgtp]?)i?b?\Z", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def parse_bytes(text: str) -> int:
    """docker's RAMInBytes: '512m', '1g', '1024' (bytes), binary units."""
    match = _BYTES.match(text.strip())
    if not match:
        raise ValueError(f"invalid size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_restart(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise ValueError(f"invalid restart policy: {text}")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    return dict((i.partition("=")[0], i.partition("=")[2]) for i in items)


def _ports(o: RunOptions, body: dict[str, Any], host: dict[str, Any]) -> None:
    exposed: dict[str, dict[str, str]] = {}
    for spec in o.expose:
        port, _, proto = spec.partition("/")
        if not port.isdigit():
            raise ValueError(f"invalid range format for --expose: {spec}")
        exposed[f"{port}/{proto or 'tcp'}"] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in o.publish:
        key, binding = parse_publish(spec)
        bindings.setdefault(key, []).append(binding)
        exposed[key] = {}
    if exposed:
        body["ExposedPorts"] = exposed
    if bindings:
        host["PortBindings"] = bindings
    if o.publish_all:
        host["PublishAllPorts"] = True


def _storage(o: RunOptions, body: dict[str, Any], host: dict[str, Any]) -> None:
    binds: list[str] = []
    anonymous: dict[str, dict[str, str]] = {}
    for spec in o.volumes:
        bind, target = parse_volume(spec, o.cwd)
        if bind is None:
            anonymous[target] = {}
        else:
            binds.append(bind)
    if binds:
        host["Binds"] = binds
    if anonymous:
        body["Volumes"] = anonymous
    if o.mounts:
        host["Mounts"] = [parse_mount(spec, o.cwd) for spec in o.mounts]
    if o.tmpfs:
        host["Tmpfs"] = {path: opts for path, _, opts in (t.partition(":") for t in o.tmpfs)}
    if o.read_only:
        host["ReadonlyRootfs"] = True


def _resources(o: RunOptions, host: dict[str, Any]) -> None:
    if o.memory:
        host["Memory"] = parse_bytes(o.memory)
    if o.cpus:
        try:
            host["NanoCpus"] = round(float(o.cpus) * 1e9)
        except ValueError:
            raise ValueError(f"invalid argument {o.cpus!r} for --cpus") from None
    if o.privileged:
        host["Privileged"] = True
    if o.cap_add:
        host["CapAdd"] = list(o.cap_add)
    if o.cap_drop:
        host["CapDrop"] = list(o.cap_drop)
    if o.init:
        host["Init"] = True


def _network(o: RunOptions, body: dict[str, Any], host: dict[str, Any]) -> None:
    if o.network:
        host["NetworkMode"] = o.network
    if o.network_aliases:
        if not o.network or o.network in ("bridge", "default", "host", "none"):
            raise ValueError("network-scoped aliases are only supported for user-defined "
                             "networks")
        body["NetworkingConfig"] = {"EndpointsConfig": {
            o.network: {"Aliases": list(o.network_aliases)}}}
    if o.hostname:
        body["Hostname"] = o.hostname
    if o.add_hosts:
        # docker accepts host:ip and host=ip, and sends host:ip.
        host["ExtraHosts"] = [h.replace("=", ":", 1) if "=" in h else h for h in o.add_hosts]
    if o.dns:
        host["Dns"] = list(o.dns)


def create_body(o: RunOptions) -> dict[str, Any]:
    """The ``POST /containers/create`` body for ``pydesk run`` flags (ValueError if invalid)."""
    host: dict[str, Any] = {}
    body: dict[str, Any] = {
        "Image": o.image, "Tty": o.tty, "OpenStdin": o.interactive, "StdinOnce": o.interactive,
        "AttachStdin": o.interactive, "AttachStdout": not o.detach,
        "AttachStderr": not o.detach, "HostConfig": host,
    }
    if o.command:
        body["Cmd"] = list(o.command)
    env = parse_env([*parse_env_file(o.env_file_lines), *o.env], o.environ)
    if env:
        body["Env"] = env
    if o.workdir:
        body["WorkingDir"] = o.workdir
    if o.user:
        body["User"] = o.user
    if o.entrypoint is not None:
        body["Entrypoint"] = shlex.split(o.entrypoint) or [""]
    if o.labels:
        body["Labels"] = parse_labels(o.labels)
    if o.stop_signal:
        body["StopSignal"] = o.stop_signal
    _ports(o, body, host)
    _storage(o, body, host)
    _resources(o, host)
    _network(o, body, host)
    if o.restart:
        host["RestartPolicy"] = parse_restart(o.restart)
    if o.remove:
        host["AutoRemove"] = True
    return body


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_timestamp(text: str, now: float) -> str:
    """``logs --since/--until``: a Go duration ('42m', '1h30m') before ``now``, an RFC 3339 time
    or a unix timestamp -> the API's unix seconds (as a string, fractions kept)."""
    text = text.strip()
    if text and _DURATION.sub("", text) == "" and _DURATION.match(text):
        seconds = sum(float(n) * _SECONDS[u] for n, u in _DURATION.findall(text))
        return f"{now - seconds:.9f}".rstrip("0").rstrip(".")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return text
    import datetime

    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a timestamp nor a duration") from None
    if moment.tzinfo is None:  # docker reads a time without a zone as local time
        moment = moment.astimezone()
    return f"{moment.timestamp():.9f}".rstrip("0").rstrip(".")
