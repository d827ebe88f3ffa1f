"""``pydesk run|ps|logs|exec|stop|start|restart|rm|inspect``: the docker CLI's container
commands, over docker-py's ``APIClient`` on the selected engine (``port`` and ``open``: ports.py).

Flag parsing to API bodies is pure (:func:`create_body`); the hijacked streams of run and
exec go through :mod:`pydesk.cli.streams`.
What it must never do: import docker-py or rich at module level (start-up time).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from pydesk.cli import render, streams
from pydesk.cli.context import api, engine_errors, fail, get_json
from pydesk.cli.streams import Terminal, attach_and_run, pump, raw_socket

RUN_FAILURE = 125


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


def parse_env(items: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """``-e K=V`` as given; ``-e K`` takes K from the caller's environment (dropped if unset)."""
    return [i if "=" in i else f"{i}={environ[i]}" for i in items if "=" in i or i in environ]


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


def parse_volume(spec: str, cwd: str) -> tuple[str | None, str]:
    """``-v`` -> (a Binds entry, or None for an anonymous volume; the container path)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return None, parts[0]
    source = parts[0]
    if source.startswith((".", "~")):  # docker resolves relative host paths against the cwd
        source = os.path.normpath(os.path.join(cwd, os.path.expanduser(source)))
    return ":".join([source, *parts[1:]]), parts[1]


def parse_restart(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise ValueError(f"invalid restart policy: {text}")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


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
    if o.env:
        body["Env"] = parse_env(o.env, o.environ)
    if o.workdir:
        body["WorkingDir"] = o.workdir
    if o.user:
        body["User"] = o.user
    if o.entrypoint is not None:
        body["Entrypoint"] = shlex.split(o.entrypoint) or [""]
    if o.publish:
        bindings: dict[str, list[dict[str, str]]] = {}
        for spec in o.publish:
            key, binding = parse_publish(spec)
            bindings.setdefault(key, []).append(binding)
        body["ExposedPorts"] = {k: {} for k in bindings}
        host["PortBindings"] = bindings
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
    if o.network:
        host["NetworkMode"] = o.network
    if o.restart:
        host["RestartPolicy"] = parse_restart(o.restart)
    if o.remove:
        host["AutoRemove"] = True
    return body


# --- commands --------------------------------------------------------------------------------

app = typer.Typer()
Many = Annotated[list[str], typer.Argument(help="Containers (names or IDs).")]


@app.command(context_settings={"allow_interspersed_args": False})
def run(  # noqa: PLR0917 (typer: one parameter per flag)
    image: Annotated[str, typer.Argument()],
    command: Annotated[list[str] | None, typer.Argument()] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    rm: Annotated[bool, typer.Option("--rm")] = False,
    name: Annotated[str | None, typer.Option("--name")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e")] = None,
    publish: Annotated[list[str] | None, typer.Option("--publish", "-p")] = None,
    volume: Annotated[list[str] | None, typer.Option("--volume", "-v")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", "-w")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    entrypoint: Annotated[str | None, typer.Option("--entrypoint")] = None,
    network: Annotated[str | None, typer.Option("--network")] = None,
    restart: Annotated[str | None, typer.Option("--restart")] = None,
    interactive: Annotated[bool, typer.Option("--interactive", "-i")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t")] = False,
) -> None:
    """Create and run a new container from an image."""
    o = RunOptions(image, tuple(command or ()), name, tuple(env or ()), tuple(publish or ()),
                   tuple(volume or ()), workdir, user, entrypoint, network, restart, detach, rm,
                   interactive, tty, dict(os.environ), os.getcwd())
    raise typer.Exit(_run(o))


@engine_errors(RUN_FAILURE)
def _run(o: RunOptions) -> int:
    import docker.errors  # type: ignore[import-untyped]

    try:
        body = create_body(o)
    except ValueError as e:
        raise fail(f"docker: {e}", RUN_FAILURE) from None
    client = api()
    try:
        ident = client.create_container_from_config(body, o.name)["Id"]
    except docker.errors.ImageNotFound:
        print(f"Unable to find image '{o.image}' locally", file=sys.stderr)
        from pydesk.cli.images import PullError, pull_with_progress

        try:
            pull_with_progress(client, o.image, quiet=False)
        except PullError as e:
            raise fail(f"Error response from daemon: {e.message}", RUN_FAILURE) from None
        ident = client.create_container_from_config(body, o.name)["Id"]
    if o.detach:
        client.start(ident)
        print(ident)
        return 0
    return attach_and_run(client, ident, o.interactive, o.tty)


@app.command()
@engine_errors()
def ps(
    all_: Annotated[bool, typer.Option("--all", "-a")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    filter_: Annotated[list[str] | None, typer.Option("--filter", "-f")] = None,
) -> None:
    """List containers."""
    list_containers(all_, quiet, filter_ or ())


def list_containers(all_: bool, quiet: bool, filter_: Sequence[str]) -> None:
    """``ps``'s work, shared by the Typer command and the fast path (context.fast_path)."""
    filters: dict[str, list[str]] = {}
    for f in filter_:
        key, _, value = f.partition("=")
        filters.setdefault(key, []).append(value)
    params = {"all": "1" if all_ else "0"}
    if filters:
        params["filters"] = json.dumps(filters)
    containers = get_json("/containers/json", params)
    if quiet:
        for c in containers:
            print(render.short_id(c["Id"]))
        return
    print(render.table(render.PS_HEADERS, render.ps_rows(containers, time.time())))


@app.command()
@engine_errors()
def logs(
    container: Annotated[str, typer.Argument()],
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    tail: Annotated[str, typer.Option("--tail", "-n")] = "all",
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t")] = False,
) -> None:
    """Fetch the logs of a container."""
    client = api()
    tty = bool(client.inspect_container(container)["Config"].get("Tty"))
    params = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": int(timestamps),
              "tail": tail if tail.isdigit() else "all"}
    response = client._get(client._url("/containers/{0}/logs", container), params=params,
                           stream=True)
    client._raise_for_status(response)
    # docker-py's logs() merges the two streams: the frames are read here to keep them apart.
    demux, out = streams.Demuxer(), {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    for data in response.raw.stream(65536, decode_content=False):
        for stream, payload in [(1, data)] if tty else demux.feed(data):
            target = out.get(stream, sys.stdout.buffer)
            target.write(payload)
            target.flush()


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
@engine_errors()
def exec_(  # noqa: PLR0917
    container: Annotated[str, typer.Argument()],
    command: Annotated[list[str], typer.Argument()],
    interactive: Annotated[bool, typer.Option("--interactive", "-i")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t")] = False,
    env: Annotated[list[str] | None, typer.Option("--env", "-e")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", "-w")] = None,
) -> None:
    """Execute a command in a running container; exits with the command's code."""
    client = api()
    exec_id = client.exec_create(container, command, stdin=interactive, tty=tty,
                                 environment=parse_env(env or (), os.environ) or None,
                                 user=user or "", workdir=workdir)["Id"]
    sock = raw_socket(client.exec_start(exec_id, tty=tty, socket=True))
    stdin = 0 if interactive else None
    if tty:
        with Terminal(lambda **kw: client.exec_resize(exec_id, **kw)):
            pump(sock, True, stdin)
    else:
        pump(sock, False, stdin)
    sock.close()
    raise typer.Exit(int(client.exec_inspect(exec_id).get("ExitCode") or 0))


def _each(names: Sequence[str], action: Any) -> None:
    """docker's loop: the name on success, one error line per failure, exit 1 if any failed."""
    import docker.errors

    failed = False
    for name in names:
        try:
            action(name)
            print(name)
        except docker.errors.APIError as e:
            print(f"Error response from daemon: {e.explanation or e}", file=sys.stderr)
            failed = True
    if failed:
        raise typer.Exit(1)


@app.command()
@engine_errors()
def stop(containers: Many,
         time_: Annotated[int | None, typer.Option("--time", "-t")] = None) -> None:
    """Stop one or more running containers."""
    client = api()
    _each(containers, lambda c: client.stop(c, timeout=time_))


@app.command()
@engine_errors()
def start(containers: Many) -> None:
    """Start one or more stopped containers."""
    client = api()
    _each(containers, client.start)


@app.command()
@engine_errors()
def restart(containers: Many,
            time_: Annotated[int | None, typer.Option("--time", "-t")] = None) -> None:
    """Restart one or more containers."""
    client = api()
    _each(containers, lambda c: client.restart(c, timeout=time_))


@app.command()
@engine_errors()
def rm(containers: Many,
       force: Annotated[bool, typer.Option("--force", "-f")] = False,
       volumes: Annotated[bool, typer.Option("--volumes", "-v")] = False) -> None:
    """Remove one or more containers."""
    client = api()
    _each(containers, lambda c: client.remove_container(c, force=force, v=volumes))


@app.command()
@engine_errors()
def inspect(names: Annotated[list[str], typer.Argument()],
            format_: Annotated[str | None, typer.Option("--format", "-f")] = None) -> None:
    """Low-level information on Docker objects, as JSON or through a template."""
    import docker.errors

    client, found, failed = api(), [], False
    lookups = (client.inspect_container, client.inspect_image, client.inspect_volume,
               client.inspect_network)
    for name in names:
        for lookup in lookups:  # docker's order when no --type is given
            try:
                found.append(lookup(name))
                break
            except docker.errors.NotFound:
                continue
        else:
            print(f"Error: No such object: {name}", file=sys.stderr)
            failed = True
    if format_ is not None:
        for obj in found:
            try:
                print(render.format_template(format_, obj))
            except KeyError as e:
                raise fail(f"template parsing error: {e.args[0]}") from None
    else:
        print(json.dumps(found, indent=4))
    if failed:
        raise typer.Exit(1)
