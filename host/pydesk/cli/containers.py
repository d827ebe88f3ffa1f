"""``pydesk run|ps|logs|exec|stop|start|restart|rm|inspect``: the docker CLI's container
commands, over docker-py's ``APIClient`` on the selected engine (``port`` and ``open``: ports.py).

Flag parsing to API bodies is pure (:mod:`pydesk.cli.runflags`); the hijacked streams of run
and exec go through :mod:`pydesk.cli.streams`.
What it must never do: import docker-py or rich at module level (start-up time).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from pydesk.cli import render, streams
from pydesk.cli.context import api, engine_errors, fail, get_json
from pydesk.cli.runflags import RunOptions, create_body, parse_env
from pydesk.cli.streams import Terminal, attach_and_run, pump, raw_socket

RUN_FAILURE = 125


# --- commands --------------------------------------------------------------------------------

app = typer.Typer()
Many = Annotated[list[str], typer.Argument(help="Containers (names or IDs).")]


Strings = list[str] | None


@app.command(context_settings={"allow_interspersed_args": False})
def run(  # noqa: PLR0917 (typer: one parameter per flag)
    image: Annotated[str, typer.Argument()],
    command: Annotated[Strings, typer.Argument()] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    rm: Annotated[bool, typer.Option("--rm")] = False,
    name: Annotated[str | None, typer.Option("--name")] = None,
    env: Annotated[Strings, typer.Option("--env", "-e")] = None,
    env_file: Annotated[Strings, typer.Option("--env-file")] = None,
    publish: Annotated[Strings, typer.Option("--publish", "-p")] = None,
    publish_all: Annotated[bool, typer.Option("--publish-all", "-P")] = False,
    expose: Annotated[Strings, typer.Option("--expose")] = None,
    volume: Annotated[Strings, typer.Option("--volume", "-v")] = None,
    mount: Annotated[Strings, typer.Option("--mount")] = None,
    tmpfs: Annotated[Strings, typer.Option("--tmpfs")] = None,
    read_only: Annotated[bool, typer.Option("--read-only")] = False,
    workdir: Annotated[str | None, typer.Option("--workdir", "-w")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    entrypoint: Annotated[str | None, typer.Option("--entrypoint")] = None,
    label: Annotated[Strings, typer.Option("--label", "-l")] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", "-h")] = None,
    network: Annotated[str | None, typer.Option("--network", "--net")] = None,
    network_alias: Annotated[Strings, typer.Option("--network-alias")] = None,
    add_host: Annotated[Strings, typer.Option("--add-host")] = None,
    dns: Annotated[Strings, typer.Option("--dns")] = None,
    restart: Annotated[str | None, typer.Option("--restart")] = None,
    memory: Annotated[str | None, typer.Option("--memory", "-m")] = None,
    cpus: Annotated[str | None, typer.Option("--cpus")] = None,
    privileged: Annotated[bool, typer.Option("--privileged")] = False,
    cap_add: Annotated[Strings, typer.Option("--cap-add")] = None,
    cap_drop: Annotated[Strings, typer.Option("--cap-drop")] = None,
    init: Annotated[bool, typer.Option("--init")] = False,
    stop_signal: Annotated[str | None, typer.Option("--stop-signal")] = None,
    pull: Annotated[str, typer.Option("--pull", help="always|missing|never")] = "missing",
    interactive: Annotated[bool, typer.Option("--interactive", "-i")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t")] = False,
) -> None:
    """Create and run a new container from an image."""
    lines: list[str] = []
    for path in env_file or ():
        try:
            with open(path) as f:
                lines += f.readlines()
        except OSError as e:
            raise fail(f"docker: open {path}: {e.strerror}", RUN_FAILURE) from None
    if pull not in ("always", "missing", "never"):
        raise fail(f'docker: invalid pull option: "{pull}": must be one of "always", '
                   '"missing" or "never"', RUN_FAILURE)
    o = RunOptions(
        image, tuple(command or ()), name, tuple(env or ()), tuple(publish or ()),
        tuple(volume or ()), workdir, user, entrypoint, network, restart, detach, rm,
        interactive, tty, dict(os.environ), os.getcwd(), mounts=tuple(mount or ()),
        publish_all=publish_all, expose=tuple(expose or ()), labels=tuple(label or ()),
        hostname=hostname, env_file_lines=tuple(lines), add_hosts=tuple(add_host or ()),
        dns=tuple(dns or ()), network_aliases=tuple(network_alias or ()), init=init,
        privileged=privileged, cap_add=tuple(cap_add or ()), cap_drop=tuple(cap_drop or ()),
        memory=memory, cpus=cpus, read_only=read_only, tmpfs=tuple(tmpfs or ()),
        stop_signal=stop_signal)
    raise typer.Exit(_run(o, pull))


@engine_errors(RUN_FAILURE)
def _run(o: RunOptions, pull: str = "missing") -> int:
    import docker.errors  # type: ignore[import-untyped]

    from pydesk.cli.images import PullError, pull_with_progress

    try:
        body = create_body(o)
    except ValueError as e:
        raise fail(f"docker: {e}", RUN_FAILURE) from None
    client = api()
    try:
        if pull == "always":
            pull_with_progress(client, o.image, quiet=False)
        try:
            ident = client.create_container_from_config(body, o.name)["Id"]
        except docker.errors.ImageNotFound:
            if pull == "never":
                raise
            print(f"Unable to find image '{o.image}' locally", file=sys.stderr)
            pull_with_progress(client, o.image, quiet=False)
            ident = client.create_container_from_config(body, o.name)["Id"]
    except PullError as e:
        raise fail(f"Error response from daemon: {e.message}", RUN_FAILURE) from None
    if o.detach:
        client.start(ident)
        print(ident)
        if o.publish or o.publish_all:
            from pydesk.cli.ports import report_forwards_after_start

            name = o.name or client.inspect_container(ident)["Name"].lstrip("/")
            report_forwards_after_start(ident, name)
        return 0
    return attach_and_run(client, ident, o.interactive, o.tty)


@app.command()
@engine_errors()
def ps(  # noqa: PLR0917
    all_: Annotated[bool, typer.Option("--all", "-a")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    filter_: Annotated[list[str] | None, typer.Option("--filter", "-f")] = None,
    format_: Annotated[str | None, typer.Option("--format")] = None,
    no_trunc: Annotated[bool, typer.Option("--no-trunc")] = False,
    last: Annotated[int, typer.Option("--last", "-n", help="The n last created (all states).")]
    = -1,
    latest: Annotated[bool, typer.Option("--latest", "-l", help="The last created.")] = False,
) -> None:
    """List containers."""
    list_containers(all_, quiet, filter_ or (), format_=format_, no_trunc=no_trunc,
                    last=1 if latest else last)


def list_containers(all_: bool, quiet: bool, filter_: Sequence[str], *,
                    format_: str | None = None, no_trunc: bool = False, last: int = -1) -> None:
    """``ps``'s work, shared by the Typer command and the fast path (context.fast_path)."""
    filters: dict[str, list[str]] = {}
    for f in filter_:
        key, _, value = f.partition("=")
        filters.setdefault(key, []).append(value)
    params = {"all": "1" if all_ or last > 0 else "0"}
    if last > 0:
        params["limit"] = str(last)
    if filters:
        params["filters"] = json.dumps(filters)
    containers = get_json("/containers/json", params)
    now = time.time()
    if quiet:
        for c in containers:
            print(c["Id"] if no_trunc else render.short_id(c["Id"]))
        return
    if format_ is None and not no_trunc:
        print(render.table(render.PS_HEADERS, render.ps_rows(containers, now)))
        return
    if format_ is None:  # docker's default columns, untruncated
        format_ = ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t"
                   "{{.Ports}}\t{{.Names}}")
    fields = [render.ps_fields(c, now, no_trunc) for c in containers]
    try:
        lines = render.format_lines(format_, fields, render.PS_FIELDS)
    except KeyError as e:
        raise fail(f"template parsing error: {e.args[0]}") from None
    for line in lines:
        print(line)


@app.command()
@engine_errors()
def logs(  # noqa: PLR0917 (typer: one parameter per flag)
    container: Annotated[str, typer.Argument()],
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    tail: Annotated[str, typer.Option("--tail", "-n")] = "all",
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t")] = False,
    since: Annotated[str | None, typer.Option(
        "--since", help="A timestamp (2013-01-02T13:23:37Z, unix) or a duration (42m).")]
    = None,
    until: Annotated[str | None, typer.Option("--until", help="As --since.")] = None,
) -> None:
    """Fetch the logs of a container."""
    from pydesk.cli.runflags import parse_timestamp

    params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": int(follow),
                              "timestamps": int(timestamps),
                              "tail": tail if tail.isdigit() else "all"}
    try:
        for key, value in (("since", since), ("until", until)):
            if value is not None:
                params[key] = parse_timestamp(value, time.time())
    except ValueError as e:
        raise fail(f"invalid value for --{key}: {e}") from None
    client = api()
    tty = bool(client.inspect_container(container)["Config"].get("Tty"))
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
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    privileged: Annotated[bool, typer.Option("--privileged")] = False,
) -> None:
    """Execute a command in a running container; exits with the command's code."""
    client = api()
    exec_id = client.exec_create(container, command, stdin=interactive and not detach,
                                 tty=tty, environment=parse_env(env or (), os.environ) or None,
                                 user=user or "", workdir=workdir, privileged=privileged)["Id"]
    if detach:
        client.exec_start(exec_id, detach=True, tty=tty)
        return
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


Signal = Annotated[str | None, typer.Option("--signal", "-s", help="e.g. SIGINT, 9.")]
Timeout = Annotated[int | None, typer.Option("--time", "-t", help="Seconds before SIGKILL.")]


def _stop_like(client: Any, action: str, container: str, timeout: int | None,
               sig: str | None) -> None:
    """POST /containers/{id}/stop|restart with docker's t and signal parameters (docker-py's
    stop() has no signal)."""
    params = {k: v for k, v in (("t", timeout), ("signal", sig)) if v is not None}
    response = client._post(client._url(f"/containers/{{0}}/{action}", container),
                            params=params, timeout=None)
    client._raise_for_status(response)


@app.command()
@engine_errors()
def stop(containers: Many, time_: Timeout = None, signal_: Signal = None) -> None:
    """Stop one or more running containers."""
    client = api()
    _each(containers, lambda c: _stop_like(client, "stop", c, time_, signal_))


@app.command()
@engine_errors()
def start(containers: Many) -> None:
    """Start one or more stopped containers."""
    client = api()
    _each(containers, client.start)


@app.command()
@engine_errors()
def restart(containers: Many, time_: Timeout = None, signal_: Signal = None) -> None:
    """Restart one or more containers."""
    client = api()
    _each(containers, lambda c: _stop_like(client, "restart", c, time_, signal_))


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
            format_: Annotated[str | None, typer.Option("--format", "-f")] = None,
            type_: Annotated[str | None, typer.Option(
                "--type", help="container|image|volume|network")] = None) -> None:
    """Low-level information on Docker objects, as JSON or through a template."""
    import docker.errors

    client, found, failed = api(), [], False
    by_type = {"container": client.inspect_container, "image": client.inspect_image,
               "volume": client.inspect_volume, "network": client.inspect_network}
    if type_ is not None and type_ not in by_type:
        raise fail(f'"{type_}" is not a valid value for --type')
    lookups = [by_type[type_]] if type_ else list(by_type.values())
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
