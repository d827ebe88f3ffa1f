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
from pydesk.cli.context import api, engine_errors

volume_app = typer.Typer(help="Manage volumes.", no_args_is_help=True)
network_app = typer.Typer(help="Manage networks.", no_args_is_help=True)
Names = Annotated[list[str], typer.Argument()]
Format = Annotated[str | None, typer.Option("--format", "-f")]


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
def volume_ls(quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False) -> None:
    """List volumes."""
    volumes = api().volumes().get("Volumes") or []
    if quiet:
        for v in volumes:
            print(v["Name"])
        return
    print(render.table(("DRIVER", "VOLUME NAME"),
                       [[v.get("Driver", "local"), v["Name"]] for v in volumes]))


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
def network_ls(quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False) -> None:
    """List networks."""
    networks = api().networks()
    if quiet:
        for n in networks:
            print(render.short_id(n["Id"]))
        return
    rows = [[render.short_id(n["Id"]), n["Name"], n.get("Driver", ""), n.get("Scope", "local")]
            for n in sorted(networks, key=lambda n: n["Name"])]
    print(render.table(("NETWORK ID", "NAME", "DRIVER", "SCOPE"), rows))


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
