"""``pydesk volume ls|create|rm|inspect|prune`` and ``pydesk network ls|create|rm|inspect|
connect|disconnect|prune``: the docker CLI's volume and network commands.

What it must never do: import docker-py at module level (start-up time).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from pydesk.cli import render
from pydesk.cli.context import api, engine_errors, fail

volume_app = typer.Typer(help="Manage volumes.", no_args_is_help=True)
network_app = typer.Typer(help="Manage networks.", no_args_is_help=True)
Names = Annotated[list[str], typer.Argument()]
Format = Annotated[str | None, typer.Option("--format", "-f")]  # inspect's; ls: -f is --filter
ListFormat = Annotated[str | None, typer.Option("--format")]


def _each(names: Sequence[str], action: Callable[[str], Any], echo: bool = True) -> None:
    import docker.errors  # type: ignore[import-untyped]

    failed = False
    for name in names:
        try:
            action(name)
            if echo:
                print(name)
        except docker.errors.APIError as e:
            print(f"Error response from daemon: {e.explanation or e}", file=sys.stderr)
            failed = True
    if failed:
        raise typer.Exit(1)


def _inspect(objects: list[Any], format_: str | None) -> None:
    if format_ is None:
        print(json.dumps(objects, indent=4))
        return
    for obj in objects:
        print(render.format_template(format_, obj))


def parse_opts(items: Sequence[str]) -> dict[str, str]:
    """``-o k=v`` / ``--label k=v`` lists -> a dict (a bare key maps to '')."""
    return dict((i.partition("=")[0], i.partition("=")[2]) for i in items)


@volume_app.command("ls")
@engine_errors()
def volume_ls(quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
              filter_: Annotated[list[str] | None, typer.Option("--filter", "-f")] = None,
              format_: ListFormat = None) -> None:
    """List volumes."""
    filters = parse_filters(filter_ or ())
    volumes = api().volumes(filters=filters or None).get("Volumes") or []
    volumes = sorted(volumes, key=lambda v: v["Name"])
    if quiet:
        for v in volumes:
            print(v["Name"])
        return
    rows = [{"Driver": v.get("Driver", "local"), "Name": v["Name"],
             "Mountpoint": v.get("Mountpoint", ""), "Scope": v.get("Scope", "local"),
             "Labels": render.labels_text(v.get("Labels"))} for v in volumes]
    _listing(format_ or "table {{.Driver}}\t{{.Name}}", rows, render.VOLUME_FIELDS)


def _listing(template: str, rows: list[dict[str, str]], headers: dict[str, str]) -> None:
    try:
        lines = render.format_lines(template, rows, headers)
    except KeyError as e:
        raise fail(f"template parsing error: {e.args[0]}") from None
    for line in lines:
        print(line)


@volume_app.command("create")
@engine_errors()
def volume_create(name: Annotated[str | None, typer.Argument()] = None,
                  driver: Annotated[str, typer.Option("--driver", "-d")] = "local",
                  opt: Annotated[list[str] | None, typer.Option("--opt", "-o")] = None,
                  label: Annotated[list[str] | None, typer.Option("--label")] = None) -> None:
    """Create a volume."""
    created = api().create_volume(name, driver=driver, driver_opts=parse_opts(opt or ()),
                                  labels=parse_opts(label or ()) or None)
    print(created["Name"])


@volume_app.command("rm")
@engine_errors()
def volume_rm(names: Names,
              force: Annotated[bool, typer.Option("--force", "-f")] = False) -> None:
    """Remove one or more volumes."""
    client = api()
    _each(names, lambda n: client.remove_volume(n, force=force))


@volume_app.command("inspect")
@engine_errors()
def volume_inspect(names: Names, format_: Format = None) -> None:
    """Display detailed information on one or more volumes."""
    client = api()
    _inspect([client.inspect_volume(n) for n in names], format_)


@network_app.command("ls")
@engine_errors()
def network_ls(quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
               filter_: Annotated[list[str] | None, typer.Option("--filter", "-f")] = None,
               format_: ListFormat = None,
               no_trunc: Annotated[bool, typer.Option("--no-trunc")] = False) -> None:
    """List networks."""
    filters = parse_filters(filter_ or ())
    networks = sorted(api().networks(filters=filters or None), key=lambda n: n["Name"])
    ident = (lambda n: n["Id"]) if no_trunc else (lambda n: render.short_id(n["Id"]))
    if quiet:
        for n in networks:
            print(ident(n))
        return
    rows = [{"ID": ident(n), "Name": n["Name"], "Driver": n.get("Driver", ""),
             "Scope": n.get("Scope", "local"), "Internal": str(bool(n.get("Internal"))).lower(),
             "Labels": render.labels_text(n.get("Labels"))} for n in networks]
    _listing(format_ or "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}", rows,
             render.NETWORK_FIELDS)


@network_app.command("create")
@engine_errors()
def network_create(name: Annotated[str, typer.Argument()],
                   driver: Annotated[str, typer.Option("--driver", "-d")] = "bridge",
                   subnet: Annotated[str | None, typer.Option("--subnet")] = None,
                   internal: Annotated[bool, typer.Option("--internal")] = False,
                   label: Annotated[list[str] | None, typer.Option("--label")] = None) -> None:
    """Create a network."""
    ipam = None
    if subnet:
        from docker.types import IPAMConfig, IPAMPool  # type: ignore[import-untyped]

        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)])
    created = api().create_network(name, driver=driver, ipam=ipam, internal=internal,
                                   labels=parse_opts(label or ()) or None)
    print(created["Id"])


@network_app.command("rm")
@engine_errors()
def network_rm(names: Names) -> None:
    """Remove one or more networks."""
    client = api()
    _each(names, client.remove_network)


@network_app.command("inspect")
@engine_errors()
def network_inspect(names: Names, format_: Format = None) -> None:
    """Display detailed information on one or more networks."""
    client = api()
    _inspect([client.inspect_network(n) for n in names], format_)


@network_app.command("connect")
@engine_errors()
def network_connect(network: Annotated[str, typer.Argument()],
                    container: Annotated[str, typer.Argument()],
                    alias: Annotated[list[str] | None, typer.Option("--alias")] = None) -> None:
    """Connect a container to a network."""
    api().connect_container_to_network(container, network, aliases=alias or None)


@network_app.command("disconnect")
@engine_errors()
def network_disconnect(network: Annotated[str, typer.Argument()],
                       container: Annotated[str, typer.Argument()],
                       force: Annotated[bool, typer.Option("--force", "-f")] = False) -> None:
    """Disconnect a container from a network."""
    api().disconnect_container_from_network(container, network, force=force)


def confirm(warning: str) -> bool:
    """docker's prune prompt: the warning, then ``[y/N]`` read from stdin (no answer: no)."""
    print(f"WARNING! {warning}\nAre you sure you want to continue? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def parse_filters(items: Sequence[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for item in items:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    return filters


Force = Annotated[bool, typer.Option("--force", "-f", help="Do not prompt for confirmation.")]
Filter = Annotated[list[str] | None, typer.Option("--filter", help="e.g. label=k=v")]


@volume_app.command("prune")
@engine_errors()
def volume_prune(force: Force = False, filter_: Filter = None,
                 all_: Annotated[bool, typer.Option(
                     "--all", "-a", help="Named volumes too, not only anonymous ones.")]
                 = False) -> None:
    """Remove unused local volumes (anonymous ones only, unless --all)."""
    which = "all local volumes" if all_ else "anonymous local volumes"
    if not force and not confirm(f"This will remove {which} not used by at least one "
                                 "container."):
        return
    filters = parse_filters(filter_ or ())
    if all_:
        filters["all"] = ["true"]
    report = api().prune_volumes(filters or None)
    deleted = report.get("VolumesDeleted") or []
    if deleted:
        print("Deleted Volumes:\n" + "\n".join(deleted) + "\n")
    print(f"Total reclaimed space: {render.human_size(report.get('SpaceReclaimed') or 0)}")


@network_app.command("prune")
@engine_errors()
def network_prune(force: Force = False, filter_: Filter = None) -> None:
    """Remove all unused custom networks."""
    if not force and not confirm("This will remove all custom networks not used by at least "
                                 "one container."):
        return
    report = api().prune_networks(parse_filters(filter_ or ()) or None)
    deleted = report.get("NetworksDeleted") or []
    if deleted:
        print("Deleted Networks:\n" + "\n".join(deleted))
