"""A stand-in container API for the hijack tests: just enough for ``docker attach`` and
docker-py's ``attach_socket``/``exec_start(socket=True)`` to reach an echo stream.

It stands in for the containers service (built elsewhere) so these tests prove the HTTP front
alone: the upgrade, the flushed headers, stdin half-close and the exit status path.
"""

from __future__ import annotations

import struct

from fastapi import APIRouter
from starlette.responses import JSONResponse

from pydeskd.api.hijack import MULTIPLEXED_STREAM, RAW_STREAM, HijackRequest, HijackRoute
from pydeskd.containerd.errors import NotFound

EXIT_CODE = 3

router = APIRouter()


@router.get("/containers/{name}/json")
def inspect(name: str) -> JSONResponse:
    if name == "missing":
        raise NotFound(f"No such container: {name}")
    return JSONResponse({
        "Id": "f" * 64, "Name": f"/{name}",
        "State": {"Status": "running", "Running": True, "Paused": False, "Pid": 1},
        "Config": {"Tty": False, "OpenStdin": True, "AttachStdin": True},
    })


@router.post("/containers/{name}/wait")
def wait(name: str) -> JSONResponse:
    return JSONResponse({"StatusCode": EXIT_CODE, "Error": None})


def frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed framing (no tty): stream id, three zero bytes, big-endian size."""
    return struct.pack(">BxxxL", stream, len(data)) + data


async def attach(request: HijackRequest) -> None:
    """Echo stdin upper-cased on stdout (``?framed=0``: raw); at stdin EOF say bye on stderr and
    end the stream."""
    if request.params["id"] == "missing":
        raise NotFound(f"No such container: {request.params['id']}")
    framed = request.query_bool("framed", True)
    reader, writer = await request.upgrade(MULTIPLEXED_STREAM if framed else RAW_STREAM)
    while data := await reader.read(4096):
        writer.write(frame(1, data.upper()) if framed else data.upper())
        await writer.drain()
    writer.write(frame(2, b"bye\n") if framed else b"bye\n")
    await writer.drain()


async def exec_start(request: HijackRequest) -> None:
    """At the first stdin bytes, write back the start body (proves it was read), then echo as
    ``attach``. Nothing is written before the client speaks: docker-py reads the 101 through a
    buffered file, so output sent with the headers would land in that buffer, not the socket."""
    reader, writer = await request.upgrade()
    first = await reader.read(4096)
    writer.write(request.body + b"\n" + first.upper())
    await writer.drain()
    while data := await reader.read(4096):
        writer.write(data.upper())
        await writer.drain()
    writer.write(b"bye\n")


hijack_routes = [
    HijackRoute("POST", "/containers/{id}/attach", attach),
    HijackRoute("POST", "/exec/{id}/start", exec_start),
]
