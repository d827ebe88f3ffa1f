"""``pydesk port`` (docker's) and ``pydesk open``: a container's published ports, and the browser
at one of them. In VM mode the port forwarder's failures (``~/.pydesk/<name>/forwards.json``)
are shown next to the ports they concern: a published port the host could not bind is not
reachable, and the user should hear why.

URL and message building is pure (:func:`open_url`, :func:`unpublished_message`,
:func:`forward_failures`). What it must never do: import docker-py at module level.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from pydesk.cli import render
from pydesk.cli.context import api, engine_errors, fail, options

app = typer.Typer()
Bindings = Mapping[str, Sequence[Mapping[str, str]] | None]


def port_key(private: str) -> str:
    """'80' -> '80/tcp' (docker's default protocol); '53/udp' stays."""
    return private if "/" in private else f"{private}/tcp"


def open_url(bindings: Bindings, private: str | None) -> str | None:
    """The URL of a published port (the lowest published TCP one when PORT is not given)."""
    keys = [port_key(private)] if private else \
        sorted((k for k in bindings if k.endswith("/tcp")), key=lambda k: int(k.split("/")[0]))
    for key in keys:
        for b in bindings.get(key) or ():
            ip = b.get("HostIp") or ""
            host = "localhost" if ip in ("", "0.0.0.0", "::") else \
                f"[{ip}]" if ":" in ip else ip
            return f"http://{host}:{b['HostPort']}"
    return None


def unpublished_message(container: str, bindings: Bindings, private: str | None) -> str:
    """Why ``open`` has no URL, and what to run instead."""
    published = sorted(k for k, v in bindings.items() if v)
    exposed = sorted(k for k, v in bindings.items() if not v)
    if private:
        key = port_key(private)
        if key in exposed:
            return (f"Error: {container}'s port {key} is not published\n"
                    f"hint: run the container with -p HOSTPORT:{key.split('/')[0]}")
        if published:
            return (f"Error: No public port '{key}' published for {container}\n"
                    f"hint: published: {', '.join(published)}")
        return f"Error: No public port '{key}' published for {container}"
    if published:  # only UDP ones
        return (f"Error: {container} publishes no TCP port (only {', '.join(published)})")
    hint = f"\nhint: run the container with -p HOSTPORT:{exposed[0].split('/')[0]}" \
        if exposed else "\nhint: run the container with -p HOSTPORT:CONTAINERPORT"
    return f"Error: {container} has no published port{hint}"


def forward_failures(entries: Sequence[Mapping[str, Any]] | None, ident: str,
                     name: str) -> list[str]:
    """The forwarder's error lines that concern this container (by id, id prefix or name)."""
    lines = []
    for e in entries or ():
        who = str(e.get("container", ""))
        if e.get("error") and who and (who.lstrip("/") == name or ident.startswith(who)):
            lines.append(f"warning: host port {e.get('host_port')}/{e.get('proto', 'tcp')} is "
                         f"not forwarded: {e.get('error')}")
    return lines


def _vm_forwards() -> list[dict[str, Any]] | None:
    """The default instance's forwards.json when the CLI talks to the VM, else None."""
    from pydesk.endpoint import resolve

    if resolve(options["host"], options["mode"]).source != "vm":
        return None
    from pydesk.cli.doctor_checks import read_forwards
    from pydesk.vm.instance import instance_files

    try:
        return read_forwards(instance_files("default").dir / "forwards.json")
    except (OSError, ValueError):
        return None


def _ports(container: str) -> tuple[Bindings, list[str]]:
    details = api().inspect_container(container)
    bindings = details["NetworkSettings"].get("Ports") or {}
    warnings = forward_failures(_vm_forwards(), details["Id"], details["Name"].lstrip("/"))
    return bindings, warnings


@app.command()
@engine_errors()
def port(container: Annotated[str, typer.Argument()],
         private: Annotated[str | None, typer.Argument(metavar="[PRIVATE_PORT[/PROTO]]")]
         = None) -> None:
    """List port mappings, or the public address of PRIVATE_PORT (or PORT/PROTO)."""
    bindings, warnings = _ports(container)
    lines = render.port_lines(bindings, private)
    if private and not lines:
        raise fail(f"Error: No public port '{port_key(private)}' published for {container}")
    for line in lines:
        print(line)
    for warning in warnings:
        print(warning, file=sys.stderr)


@app.command(name="open")
@engine_errors()
def open_(container: Annotated[str, typer.Argument()],
          port_: Annotated[str | None, typer.Argument(metavar="[PORT[/PROTO]]")] = None,
          print_: Annotated[bool, typer.Option("--print", help="Print the URL only.")] = False,
          ) -> None:
    """Open the browser at a container's published port (the first TCP one, or PORT)."""
    bindings, warnings = _ports(container)
    url = open_url(bindings, port_)
    if url is None:
        raise fail(unpublished_message(container, bindings, port_))
    for warning in warnings:
        print(warning, file=sys.stderr)
    if print_:
        print(url)
        return
    import webbrowser

    if webbrowser.open(url):
        print(f"opened {url}")
    else:
        print(url)
        print("no browser found here: open the URL above yourself", file=sys.stderr)


def report_forwards_after_start(ident: str, name: str, timeout: float = 1.5) -> None:
    """VM mode, after ``run -d -p``: waits (briefly) until the port forwarder has handled this
    container, then prints a warning per host port it could not forward (taken, refused) —
    so a port in use is said where the user asked for it, not only in ``pydesk port``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        entries = _vm_forwards()
        if entries is None:
            return  # not the VM (passthrough: pydeskd itself fails a taken port)
        mine = [e for e in entries if str(e.get("container", "")).lstrip("/") == name
                or (e.get("container") and ident.startswith(str(e.get("container"))))]
        if mine or time.monotonic() > deadline:
            for warning in forward_failures(entries, ident, name):
                print(warning, file=sys.stderr)
            return
        time.sleep(0.05)
