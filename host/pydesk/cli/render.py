"""Rendering as the docker CLI does: tables, ages, sizes, ports, ``--format`` templates.

Pure functions over Engine API JSON (dicts), unit-tested. What it must never do: talk to an
engine, or import rich/docker-py (the CLI's start-up time).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

# docker's tabwriter: columns padded to their widest cell plus three spaces.
PADDING = 3


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned, separated as ``docker ps`` does; no trailing spaces."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [c.ljust(widths[i] + PADDING) for i, c in enumerate(row[:-1])]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines)


def human_duration(seconds: float) -> str:
    """docker's ``units.HumanDuration``: 'Less than a second', '5 seconds', 'About an hour'..."""
    s = int(seconds)
    minutes, hours = s // 60, round(seconds / 3600)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(created: float, now: float) -> str:
    return f"{human_duration(max(0.0, now - created))} ago"


def human_size(size: float) -> str:
    """docker's ``units.HumanSizeWithPrecision(size, 3)``: decimal units, 3 significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def short_id(ident: str) -> str:
    return ident.removeprefix("sha256:")[:12]


def command(path_and_args: str, width: int = 20) -> str:
    """The COMMAND cell: quoted, cut to ``width`` characters with an ellipsis."""
    if len(path_and_args) > width:
        path_and_args = path_and_args[: width - 1] + "…"
    return f'"{path_and_args}"'


def ports(entries: Sequence[Mapping[str, Any]]) -> str:
    """The PORTS cell from ``/containers/json`` Ports: '0.0.0.0:8080->80/tcp, 443/tcp'."""
    cells = []
    for p in sorted(entries, key=lambda p: (p.get("PrivatePort", 0), p.get("Type", ""),
                                            p.get("IP", ""))):
        proto = p.get("Type", "tcp")
        if p.get("PublicPort"):
            ip = p.get("IP") or "0.0.0.0"
            host = f"[{ip}]" if ":" in ip else ip
            cells.append(f"{host}:{p['PublicPort']}->{p['PrivatePort']}/{proto}")
        else:
            cells.append(f"{p['PrivatePort']}/{proto}")
    return ", ".join(dict.fromkeys(cells))


def port_lines(bindings: Mapping[str, Sequence[Mapping[str, str]] | None],
               private: str | None = None) -> list[str]:
    """``docker port`` lines from NetworkSettings.Ports: '80/tcp -> 0.0.0.0:8080'."""
    if private and "/" not in private:
        private = f"{private}/tcp"
    lines = []
    for key, binds in sorted(bindings.items()):
        if private and key != private:
            continue
        for b in binds or ():
            ip = b.get("HostIp") or "0.0.0.0"
            host = f"[{ip}]" if ":" in ip else ip
            lines.append(f"{host}:{b['HostPort']}" if private else
                         f"{key} -> {host}:{b['HostPort']}")
    return lines


def ps_rows(containers: Sequence[Mapping[str, Any]], now: float) -> list[list[str]]:
    return [[short_id(c["Id"]), c.get("Image", ""), command(c.get("Command", "")),
             ago(c.get("Created", now), now), c.get("Status", ""), ports(c.get("Ports") or []),
             ",".join(n.lstrip("/") for n in c.get("Names") or [])]
            for c in containers]


PS_HEADERS = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")
IMAGES_HEADERS = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")


def image_rows(images: Sequence[Mapping[str, Any]], now: float) -> list[list[str]]:
    rows = []
    for image in images:
        tags = image.get("RepoTags") or ["<none>:<none>"]
        for tag in tags:
            repo, _, name = tag.rpartition(":")
            if "/" in name:  # a registry port, not a tag
                repo, name = tag, "<none>"
            rows.append([repo, name, short_id(image["Id"]), ago(image.get("Created", now), now),
                         human_size(image.get("Size", 0))])
    return rows


_ACTION = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_.]*)\s*\}\}")


def _lookup(obj: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if not isinstance(obj, Mapping) or part not in obj:
            raise KeyError(f"template: can't evaluate field {part}")
        obj = obj[part]
    return obj


def _go_text(value: Any) -> str:
    # Go's fmt for the values JSON gives: nil -> <nil>, bools lowercase, maps as map[...].
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_text(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_text(v) for v in value) + "]"
    return str(value)


def format_template(template: str, obj: Mapping[str, Any]) -> str:
    """A Go-template subset: ``{{.A.B}}`` dotted paths and ``{{json .A}}``; KeyError if missing."""
    def action(m: re.Match[str]) -> str:
        value = _lookup(obj, m.group(2))
        return json.dumps(value) if m.group(1) else _go_text(value)

    return _ACTION.sub(action, template)


# --- --format for listings (ps, images, volume ls, network ls) ---------------------------------

PS_FIELDS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
             "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
             "State": "STATE", "Status": "STATUS", "Names": "NAMES", "Labels": "LABELS",
             "Mounts": "MOUNTS", "Networks": "NETWORKS"}
IMAGE_FIELDS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
                "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                "Digest": "DIGEST"}
VOLUME_FIELDS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT",
                 "Scope": "SCOPE", "Labels": "LABELS"}
NETWORK_FIELDS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                  "Internal": "INTERNAL", "Labels": "LABELS"}


def go_time(seconds: float) -> str:
    """Go's time.Time String() in UTC, as docker prints CreatedAt."""
    import datetime

    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def labels_text(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def ps_fields(c: Mapping[str, Any], now: float, no_trunc: bool = False) -> dict[str, str]:
    """A ``/containers/json`` entry as the fields ``docker ps --format`` knows."""
    created = c.get("Created", now)
    networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
    return {"ID": c["Id"] if no_trunc else short_id(c["Id"]), "Image": c.get("Image", ""),
            "Command": f'"{c.get("Command", "")}"' if no_trunc else command(
                c.get("Command", "")),
            "CreatedAt": go_time(created), "RunningFor": ago(created, now),
            "Ports": ports(c.get("Ports") or []), "State": c.get("State", ""),
            "Status": c.get("Status", ""),
            "Names": ",".join(n.lstrip("/") for n in c.get("Names") or []),
            "Labels": labels_text(c.get("Labels")),
            "Mounts": ",".join(m.get("Name") or m.get("Source", "")
                               for m in c.get("Mounts") or []),
            "Networks": ",".join(sorted(networks))}


def image_fields(images: Sequence[Mapping[str, Any]], now: float,
                 no_trunc: bool = False) -> list[dict[str, str]]:
    """``/images/json`` as ``docker images --format`` rows: one per tag."""
    rows = []
    for image in images:
        digests = image.get("RepoDigests") or []
        for tag in image.get("RepoTags") or ["<none>:<none>"]:
            repo, _, name = tag.rpartition(":")
            if "/" in name:  # a registry port, not a tag
                repo, name = tag, "<none>"
            digest = next((d.partition("@")[2] for d in digests
                           if d.partition("@")[0] == repo), "<none>")
            rows.append({"Repository": repo, "Tag": name,
                         "ID": image["Id"] if no_trunc else short_id(image["Id"]),
                         "CreatedSince": ago(image.get("Created", now), now),
                         "CreatedAt": go_time(image.get("Created", now)),
                         "Size": human_size(image.get("Size", 0)), "Digest": digest})
    return rows


def format_lines(template: str, rows: Sequence[Mapping[str, Any]],
                 headers: Mapping[str, str]) -> list[str]:
    """docker's ``--format``: a Go template per row; ``table TEMPLATE`` adds the header line and
    aligns the ``\\t``-separated cells as a table. KeyError for an unknown field."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    if not template.startswith("table"):
        return [format_template(template, row) for row in rows]
    template = template.removeprefix("table").strip() or \
        "\t".join(f"{{{{.{field}}}}}" for field in headers)
    header = _ACTION.sub(lambda m: headers.get(m.group(2), m.group(2).upper()), template)
    cells = [format_template(template, row).split("\t") for row in rows]
    width = len(header.split("\t"))
    return table(header.split("\t"), [c + [""] * (width - len(c)) for c in cells]).splitlines()
