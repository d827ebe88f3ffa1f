"""The Engine API's container endpoints: create, list, inspect, start/stop/restart/kill, wait,
remove, logs, top, stats, rename, pause/unpause, resize, prune, attach (hijacked), and the
archive (``docker cp``: HEAD/GET/PUT), export and update endpoints.

What it is for: each handler parses the request as dockerd does and calls the daemon's
``ContainerService`` (``request.app.state.daemon.containers``,
:mod:`pydeskd.daemon.containers.service`); errors are the containerd kinds the app maps to
Docker's statuses (NotModified 304 for start/stop, Conflict 409, NotFound 404). Blocking calls
run in worker threads (sync handlers, streamed iterators). ``wait`` sends its headers at once
and the body when the condition is met, as Docker does (the CLI attaches and waits before it
starts a container). Streams that may last as long as a container (wait, ``logs -f``,
attach) end soon after their client leaves (see :mod:`pydeskd.api.streaming`).

What it must never do: hold container logic (it is in the service), or block the event loop.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from pydeskd.api.bodies import json_body
from pydeskd.api.hijack import MULTIPLEXED_STREAM, RAW_STREAM, HijackRequest, HijackRoute
from pydeskd.api.routes.images import parse_filters
from pydeskd.api.streaming import StoppableStream, in_own_thread, pump, send_logs
from pydeskd.containerd import oci
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types import (
    Config,
    HostConfig,
    networking_config_from_api,
    validate_create,
)
from pydeskd.daemon.containers import archive as archive_mod
from pydeskd.daemon.containers import export as export_mod
from pydeskd.daemon.containers import update as update_mod
from pydeskd.daemon.containers.attach import frame
from pydeskd.daemon.containers.filters import ListOptions
from pydeskd.daemon.containers.service import ContainerService
from pydeskd.daemon.containers.timeutil import parse_api_time
from pydeskd.daemon.logs import LogOptions
from pydeskd.shim.protocol import Stream

router = APIRouter()

# The hijack handlers get no app: the daemon is bound here by ``bind`` (the app factory calls
# it; see the module docstring of pydeskd.api.hijack).
_bound: dict[str, Any] = {}


def bind(daemon: Any) -> None:
    """Gives the hijacked routes (attach) the daemon the app serves."""
    _bound["daemon"] = daemon


def _service(daemon: Any) -> ContainerService:
    svc = getattr(daemon, "containers", None)
    if svc is None:
        from pydeskd.containerd.errors import Unavailable

        raise Unavailable("the container service is not running")
    out: ContainerService = svc
    return out


def containers(request: Request) -> ContainerService:
    daemon = request.app.state.daemon
    _bound["daemon"] = daemon
    return _service(daemon)


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no")


WAIT_SLICE = 0.5  # how long a wait blocks before it checks whether its client is still there


# --- create / list / inspect ---------------------------------------------------------------

@router.post("/containers/create", status_code=201)
async def create(request: Request, name: str = "", platform: str = "") -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidArgument("config cannot be empty in order to create a container")
    svc = containers(request)
    config = Config.from_api(body)
    host = HostConfig.from_api(body.get("HostConfig"))
    networking = networking_config_from_api(body.get("NetworkingConfig"))
    config, warnings = validate_create(config, host)
    host = host.with_defaults()
    wanted = oci.Platform.parse(platform) if platform else None
    record = await run_in_threadpool(svc.create, name or None, config, host, wanted,
                                     networking)
    return JSONResponse({"Id": record.id, "Warnings": warnings}, status_code=201)


@router.get("/containers/json")
def list_containers(request: Request, all: str = "", limit: int = -1, size: str = "",
                    filters: str = "") -> list[dict[str, Any]]:
    options = ListOptions(all=_bool(all), limit=limit, filters=parse_filters(filters))
    return containers(request).list(options, size=_bool(size))


@router.get("/containers/{name}/json")
def inspect(request: Request, name: str, size: str = "") -> dict[str, Any]:
    return containers(request).inspect(name, size=_bool(size))


# --- lifecycle -----------------------------------------------------------------------------

@router.post("/containers/{name}/start", status_code=204)
def start(request: Request, name: str) -> Response:
    containers(request).start(name)
    return Response(status_code=204)


def _timeout(t: str | None) -> int | None:
    if t is None or t == "":
        return None
    try:
        return int(t)
    except ValueError:
        raise InvalidArgument(f"invalid value for t: {t}") from None


@router.post("/containers/{name}/stop", status_code=204)
def stop(request: Request, name: str, t: str | None = None,
         signal: str = "") -> Response:
    containers(request).stop(name, _timeout(t), signal or None)
    return Response(status_code=204)


@router.post("/containers/{name}/restart", status_code=204)
def restart(request: Request, name: str, t: str | None = None,
            signal: str = "") -> Response:
    containers(request).restart(name, _timeout(t), signal or None)
    return Response(status_code=204)


@router.post("/containers/{name}/kill", status_code=204)
def kill(request: Request, name: str, signal: str = "") -> Response:
    containers(request).kill(name, signal or None)
    return Response(status_code=204)


@router.post("/containers/{name}/wait")
async def wait(request: Request, name: str, condition: str = "") -> StreamingResponse:
    svc = containers(request)
    # Resolved (a missing container is a 404, not a stream) and the baseline taken before
    # the headers: the CLI starts the container after them, and a --rm run may be gone
    # before a lookup made later.
    block = await run_in_threadpool(svc.waiter, name, condition or "not-running")
    stop = threading.Event()

    def until_met() -> tuple[int, str] | None:
        # In slices, so a client that went away (``stop``) frees the thread soon.
        while not stop.is_set():
            try:
                return block(WAIT_SLICE)
            except TimeoutError:
                continue
        return None

    async def body() -> AsyncIterator[bytes]:
        yield b""  # the headers go out now; the CLI starts the container after them
        try:
            # A thread of its own: a wait may last for days, the worker pool is for
            # requests that end.
            result = await in_own_thread(until_met)
        finally:
            stop.set()
        if result is None:
            return
        code, error = result
        yield json.dumps({"StatusCode": code,
                          "Error": {"Message": error} if error else None}).encode() + b"\n"

    return StoppableStream(body(), stop, media_type="application/json")


@router.delete("/containers/{name}", status_code=204)
def remove(request: Request, name: str, force: str = "", v: str = "",
           link: str = "") -> Response:
    if _bool(link):
        raise InvalidArgument("links are not supported")
    containers(request).remove(name, force=_bool(force), volumes=_bool(v))
    return Response(status_code=204)


@router.post("/containers/{name}/pause", status_code=204)
def pause(request: Request, name: str) -> Response:
    containers(request).pause(name)
    return Response(status_code=204)


@router.post("/containers/{name}/unpause", status_code=204)
def unpause(request: Request, name: str) -> Response:
    containers(request).unpause(name)
    return Response(status_code=204)


@router.post("/containers/{ref}/rename", status_code=204)
def rename(request: Request, ref: str, name: str = "") -> Response:
    if not name:
        raise InvalidArgument("new name cannot be empty")
    containers(request).rename(ref, name)
    return Response(status_code=204)


@router.post("/containers/{name}/resize")
def resize(request: Request, name: str, h: int = 0, w: int = 0) -> Response:
    containers(request).resize(name, h, w)
    return Response(status_code=200)


@router.post("/containers/prune")
def prune(request: Request, filters: str = "") -> dict[str, Any]:
    return containers(request).prune(parse_filters(filters))


# --- logs / top / stats --------------------------------------------------------------------

@router.get("/containers/{name}/logs")
def logs(request: Request, name: str, *, follow: str = "", stdout: str = "", stderr: str = "",
         since: str = "", until: str = "", timestamps: str = "",
         tail: str = "all") -> StreamingResponse:
    svc = containers(request)
    c = svc.get(name)
    want_out, want_err = _bool(stdout), _bool(stderr)
    if not (want_out or want_err):
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    try:
        tail_n = -1 if tail in ("", "all") else int(tail)
    except ValueError:
        tail_n = -1  # Docker reads an unparsable tail as "all"
    options = LogOptions(stdout=want_out, stderr=want_err,
                         since_ns=parse_api_time(since) if since and since != "0" else 0,
                         until_ns=parse_api_time(until) if until and until != "0" else 0,
                         timestamps=_bool(timestamps), tail=tail_n, follow=_bool(follow))
    stop = threading.Event()
    entries = svc.logs(c.id, options, stop)
    tty = c.tty

    def chunks() -> Iterator[bytes]:
        try:
            for entry in entries:
                stream = Stream.STDERR if entry.stream == "stderr" else Stream.STDOUT
                yield entry.data if tty else frame(stream, entry.data)
        finally:
            stop.set()

    return StoppableStream(chunks(), stop, media_type=RAW_STREAM if tty else MULTIPLEXED_STREAM)


@router.get("/containers/{name}/top")
def top(request: Request, name: str, ps_args: str = "") -> dict[str, Any]:
    return containers(request).top(name, ps_args)


@router.get("/containers/{name}/stats")
def stats(request: Request, name: str, stream: str = "true",
          one_shot: bool = False) -> Response:
    svc = containers(request)
    c = svc.get(name)
    one_shot = _bool(request.query_params.get("one-shot"), one_shot)
    if not _bool(stream, True):
        first = svc.stats(c.id)
        if not one_shot and c.state.is_running:
            time.sleep(1.0)  # the CLI's CPU % needs two samples, as dockerd collects them
            first = svc.stats(c.id, previous=first)
        return JSONResponse(first)

    def samples() -> Iterator[bytes]:
        previous: dict[str, Any] | None = None
        while True:
            sample = svc.stats(c.id, previous=previous)
            yield json.dumps(sample).encode() + b"\n"
            previous = sample
            if not svc.get(c.id).state.running:
                return
            time.sleep(1.0)

    return StreamingResponse(samples(), media_type="application/json")


# --- attach (hijacked) ---------------------------------------------------------------------

async def attach(request: HijackRequest) -> None:
    """``POST /containers/{id}/attach``: the container's live streams on the raw socket."""
    daemon = _bound.get("daemon")
    svc = _service(daemon)
    name = request.params["id"]
    c = await run_in_threadpool(svc.get, name)
    want_stdin = request.query_bool("stdin")
    want_out = request.query_bool("stdout")
    want_err = request.query_bool("stderr")
    # Resolved before the answer (a log driver without read support is an HTTP error); the
    # entries are read lazily, after it.
    past = None
    if request.query_bool("logs"):
        past = await run_in_threadpool(
            svc.logs, c.id, LogOptions(stdout=want_out, stderr=want_err))
    if not request.query_bool("stream"):
        reader, writer = await request.upgrade(RAW_STREAM if c.tty else MULTIPLEXED_STREAM)
        if past is not None:
            await send_logs(past, c.tty, writer)
        return
    # The CLI starts the container once its attach is answered, and the service's attach
    # waits for that start: reserve first (the start then waits for us), answer, then attach.
    reservation = await run_in_threadpool(svc.reserve_attach, c.id)
    try:
        reader, writer = await request.upgrade(RAW_STREAM if c.tty else MULTIPLEXED_STREAM)
        if past is not None:
            await send_logs(past, c.tty, writer)
        attachment = await run_in_threadpool(lambda: svc.attach(
            c.id, stdin=want_stdin, stdout=want_out, stderr=want_err,
            reservation=reservation))
    finally:
        svc.release_attach(reservation)
    try:
        await pump(attachment, reader, writer, request.query_value("detachKeys") or "",
                   stdin_once=bool(c.config.get("StdinOnce")))
    finally:
        attachment.close()


# --- docker cp, export, update (daemon/containers/archive.py, export.py, update.py) ---------

_SPOOL_MEMORY = 8 << 20  # a PUT body larger than this is spooled to a temporary file


@router.head("/containers/{name}/archive")
def archive_head(request: Request, name: str, path: str = "") -> Response:
    found = archive_mod.stat_path(containers(request), name, path)
    return Response(status_code=200, headers={archive_mod.STAT_HEADER: found.header()})


@router.get("/containers/{name}/archive")
def archive_get(request: Request, name: str, path: str = "") -> StreamingResponse:
    found, chunks = archive_mod.get_archive(containers(request), name, path)
    return StreamingResponse(chunks, media_type="application/x-tar",
                             headers={archive_mod.STAT_HEADER: found.header()})


@router.put("/containers/{name}/archive")
async def archive_put(request: Request, name: str, path: str = "",
                      noOverwriteDirNonDir: str = "",  # noqa: N803 - the API's names
                      copyUIDGID: str = "") -> Response:  # noqa: N803
    svc = containers(request)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as spool:
        async for chunk in request.stream():
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
        await run_in_threadpool(
            lambda: archive_mod.put_archive(
                svc, name, path, spool,
                no_overwrite_dir_non_dir=_bool(noOverwriteDirNonDir),
                copy_uid_gid=_bool(copyUIDGID)))
    return Response(status_code=200)


@router.get("/containers/{name}/export")
def export(request: Request, name: str) -> StreamingResponse:
    return StreamingResponse(export_mod.export(containers(request), name),
                             media_type="application/x-tar")


@router.post("/containers/{name}/update")
async def update(request: Request, name: str) -> dict[str, Any]:
    body = await json_body(request, {})
    if not isinstance(body, dict):
        raise InvalidArgument("invalid update body: not a JSON object")
    warnings = await run_in_threadpool(update_mod.update, containers(request), name, body)
    return {"Warnings": warnings}


hijack_routes = [HijackRoute("POST", "/containers/{id}/attach", attach)]
