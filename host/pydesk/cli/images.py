"""``pydesk images|pull|rmi``: the docker CLI's image commands; pulls show one rich progress
bar per layer from the engine's JSON stream on a terminal, docker's plain lines elsewhere.

What it must never do: import docker-py or rich at module level (start-up time).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any

import typer

from pydesk.cli import render
from pydesk.cli.context import api, engine_errors, fail, get_json

app = typer.Typer()


def split_reference(ref: str) -> tuple[str, str]:
    """'busybox' -> ('busybox', 'latest'); 'reg:5000/a@sha256:..' keeps the digest."""
    if "@" in ref:
        return ref.split("@", 1)[0], ref.split("@", 1)[1]
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


class PullError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


DONE = ("Pull complete", "Already exists", "Download complete")


def follow_pull(events: Iterable[Mapping[str, Any]], progress: Any | None,
                plain: Callable[[str], None] | None = None) -> list[str]:
    """Drive ``progress`` (rich Progress: one bar per layer) from the pull stream, or, with
    ``plain``, print docker's non-terminal lines (``<layer>: <status>`` when a layer's status
    changes). Returns the status lines docker prints at the end (Digest, Status). PullError on
    an error message."""
    tasks: dict[str, Any] = {}
    totals: dict[str, float] = {}
    last: dict[str, str] = {}
    final: list[str] = []
    for event in events:
        if "error" in event:
            raise PullError(str(event.get("error")))
        status, layer = str(event.get("status", "")), event.get("id")
        detail = event.get("progressDetail") or {}
        if layer and not status.startswith("Pulling from"):
            if plain is not None and last.get(layer) != status:
                plain(f"{layer}: {status}")
            last[layer] = status
            if progress is None:
                continue
            if layer not in tasks:
                tasks[layer] = progress.add_task(f"{layer}", total=None)
            total, current = detail.get("total"), detail.get("current")
            desc = f"{layer}: {status}"
            if total:
                totals[layer] = total
                progress.update(tasks[layer], description=desc, total=total, completed=current)
            elif status in DONE:  # full bar, keeping the layer's size when it was given
                size = totals.get(layer, 1)
                progress.update(tasks[layer], description=desc, total=size, completed=size)
            else:
                progress.update(tasks[layer], description=desc)
        elif status.startswith(("Digest:", "Status:")):
            final.append(status)
    return final


def pull_with_progress(client: Any, ref: str, quiet: bool) -> None:
    repo, tag = split_reference(ref)
    events = client.pull(repo, tag, stream=True, decode=True)
    if quiet:
        follow_pull(events, None)
        return
    print(f"{tag}: Pulling from {repo}" if "sha256:" not in tag else f"Pulling {ref}",
          file=sys.stderr)
    if not sys.stderr.isatty():  # docker's plain lines: no bars in a log or a pipe
        final = follow_pull(events, None, lambda line: print(line, file=sys.stderr))
    else:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      transient=False, console=_console()) as progress:
            final = follow_pull(events, progress)
    for line in final:
        print(line, file=sys.stderr)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@app.command()
@engine_errors()
def pull(ref: Annotated[str, typer.Argument(metavar="NAME[:TAG|@DIGEST]")],
         quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False) -> None:
    """Download an image from a registry."""
    try:
        pull_with_progress(api(), ref, quiet)
    except PullError as e:
        print(f"Error response from daemon: {e.message}", file=sys.stderr)
        raise typer.Exit(1) from None
    repo, tag = split_reference(ref)
    print(f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag}")


@app.command()
@engine_errors()
def images(all_: Annotated[bool, typer.Option("--all", "-a")] = False,
           quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
           filter_: Annotated[list[str] | None, typer.Option("--filter", "-f")] = None,
           format_: Annotated[str | None, typer.Option("--format")] = None,
           no_trunc: Annotated[bool, typer.Option("--no-trunc")] = False) -> None:
    """List images."""
    list_images(all_, quiet, filter_ or (), format_, no_trunc)


def list_images(all_: bool, quiet: bool, filter_: Sequence[str] = (),
                format_: str | None = None, no_trunc: bool = False) -> None:
    """``images``'s work, shared by the Typer command and the fast path (context.fast_path)."""
    import json

    params = {"all": "1" if all_ else "0"}
    filters: dict[str, list[str]] = {}
    for f in filter_:
        key, _, value = f.partition("=")
        filters.setdefault(key, []).append(value)
    if filters:
        params["filters"] = json.dumps(filters)
    found = get_json("/images/json", params)
    if quiet:
        for image in found:
            print(image["Id"] if no_trunc else render.short_id(image["Id"]))
        return
    if format_ is None and not no_trunc:
        print(render.table(render.IMAGES_HEADERS, render.image_rows(found, time.time())))
        return
    rows = render.image_fields(found, time.time(), no_trunc)
    template = format_ or \
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    try:
        lines = render.format_lines(template, rows, render.IMAGE_FIELDS)
    except KeyError as e:
        raise fail(f"template parsing error: {e.args[0]}") from None
    for line in lines:
        print(line)


@app.command()
@engine_errors()
def rmi(names: Annotated[list[str], typer.Argument()],
        force: Annotated[bool, typer.Option("--force", "-f")] = False,
        no_prune: Annotated[bool, typer.Option("--no-prune")] = False) -> None:
    """Remove one or more images."""
    import docker.errors  # type: ignore[import-untyped]

    client, failed = api(), False
    for name in names:
        try:
            for item in client.remove_image(name, force=force, noprune=no_prune):
                for key, value in item.items():
                    print(f"{key}: {value}")
        except docker.errors.APIError as e:
            print(f"Error response from daemon: {e.explanation or e}", file=sys.stderr)
            failed = True
    if failed:
        raise typer.Exit(1)
