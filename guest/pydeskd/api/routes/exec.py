"""The Engine API's exec endpoints: create, start (hijacked, or detached), inspect, resize.

What it is for: parsing Docker's ExecConfig / ExecStartConfig and calling the container
service's exec API (:mod:`pydeskd.daemon.containers.execs`). A started exec's stream is pumped
as an attach is (:func:`pydeskd.api.streaming.pump`); the connection closes only once
the exec's exit code is recorded, so the CLI's inspect right after reads it.

What it must never do: hold exec logic of its own, or block the event loop.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pydeskd.api.hijack import MULTIPLEXED_STREAM, RAW_STREAM, HijackRequest, HijackRoute
from pydeskd.api.routes.containers import _bound, _service, containers
from pydeskd.api.streaming import pump
from pydeskd.containerd.errors import ContainerdError, InvalidArgument
from pydeskd.daemon.containers.attach import frame
from pydeskd.shim.protocol import Stream

router = APIRouter()
EXIT_WAIT = 10.0  # after the output ends, how long the exit code may take to be recorded


def _str_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"json: cannot unmarshal {type(value).__name__} into Go struct "
                              f"field ExecConfig.{key} of type []string")
    return value


@router.post("/containers/{name}/exec", status_code=201)
async def exec_create(request: Request, name: str) -> JSONResponse:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("invalid exec config")
    cmd = _str_list(body, "Cmd")
    if not cmd:
        raise InvalidArgument("No exec command specified")
    svc = containers(request)
    exec_id = await run_in_threadpool(lambda: svc.exec_create(
        name, cmd, env=_str_list(body, "Env"), user=str(body.get("User") or ""),
        workdir=str(body.get("WorkingDir") or ""), tty=bool(body.get("Tty")),
        attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout")),
        attach_stderr=bool(body.get("AttachStderr")),
        privileged=bool(body.get("Privileged")),
        detach_keys=str(body.get("DetachKeys") or "")))
    return JSONResponse({"Id": exec_id}, status_code=201)


@router.get("/exec/{exec_id}/json")
def exec_inspect(request: Request, exec_id: str) -> dict[str, Any]:
    return containers(request).exec_inspect(exec_id)


@router.post("/exec/{exec_id}/resize")
def exec_resize(request: Request, exec_id: str, h: int = 0, w: int = 0) -> Response:
    containers(request).exec_resize(exec_id, h, w)
    return Response(status_code=200)


async def exec_start(request: HijackRequest) -> None:
    """``POST /exec/{id}/start``: detached (an empty 200) or the exec's streams."""
    svc = _service(_bound.get("daemon"))
    exec_id = request.params["id"]
    body = request.json() or {}
    if not isinstance(body, dict):
        raise InvalidArgument("invalid exec start config")
    record = await run_in_threadpool(svc.execs.get, exec_id)
    tty = bool(body.get("Tty", record.tty))
    if body.get("Detach"):
        await run_in_threadpool(lambda: svc.exec_start(exec_id, True, tty))
        return  # the front answers an empty 200
    await run_in_threadpool(svc.execs.check_startable, exec_id)  # errors as HTTP errors
    # Answer before the process starts: docker-py reads the 101 through a buffered file, so
    # output arriving with the headers would be swallowed by that buffer (dockerd, too,
    # starts the process after the hijack).
    reader, writer = await request.upgrade(RAW_STREAM if tty else MULTIPLEXED_STREAM)
    try:
        attachment = await run_in_threadpool(lambda: svc.exec_start(exec_id, False, tty))
    except ContainerdError as exc:
        # As dockerd: the message goes to the client's stdout, framed when the stream is
        # multiplexed (raw text there reads as a bad frame header to the CLI and docker-py).
        message = f"{exc}\r\n".encode()
        writer.write(message if tty else frame(Stream.STDOUT, message))
        await writer.drain()
        return
    if attachment is None:
        return
    try:
        await pump(attachment, reader, writer, record.detach_keys, stdin_once=True)
        await run_in_threadpool(svc.execs.wait, exec_id, EXIT_WAIT)
    finally:
        attachment.close()


hijack_routes = [HijackRoute("POST", "/exec/{id}/start", exec_start)]
