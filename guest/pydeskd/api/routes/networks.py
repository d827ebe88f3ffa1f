"""The Engine API's network endpoints: list, inspect, create, remove, connect, disconnect, prune.

What it is for: each handler reads the request as dockerd does (``NetworkCreateRequest``,
``NetworkConnectRequest``, ``NetworkDisconnectRequest`` JSON, Docker's filters) and calls the
daemon's ``NetworkService`` (``request.app.state.daemon.networks``); its errors (NotFound
"network X not found", 409 for a name taken or a network in use, 400 for bad subnets) are
mapped by the app's one error handler. ``docker network ls/create/inspect/rm/connect/
disconnect/prune`` are these calls.

What it must never do: hold network logic, or block the event loop (handlers are sync: they
run in worker threads).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pydeskd.api.bodies import json_object
from pydeskd.api.image_requests import parse_filters
from pydeskd.containerd.errors import InvalidArgument, Unavailable
from pydeskd.network.requests import CreateRequest, EndpointRequest
from pydeskd.network.service import NetworkService

router = APIRouter()


def networks_of(request: Request) -> NetworkService:
    service = getattr(request.app.state.daemon, "networks", None)
    if service is None:
        raise Unavailable("networks are not available in this daemon")
    assert isinstance(service, NetworkService)
    return service




@router.get("/networks")
def list_networks(request: Request, filters: str = "") -> list[dict[str, Any]]:
    return networks_of(request).list(parse_filters(filters))


@router.get("/networks/{ref}")
def inspect_network(request: Request, ref: str, verbose: str = "", scope: str = ""
                    ) -> dict[str, Any]:
    del verbose, scope
    return networks_of(request).inspect(ref)


@router.post("/networks/create", status_code=201)
async def create_network(request: Request) -> JSONResponse:
    req = CreateRequest.from_api(await json_object(request))
    svc = networks_of(request)
    net = await run_in_threadpool(svc.create, req)
    return JSONResponse({"Id": net.id, "Warning": ""}, status_code=201)


@router.delete("/networks/{ref}", status_code=204)
def remove_network(request: Request, ref: str) -> Response:
    networks_of(request).remove(ref)
    return Response(status_code=204)


@router.post("/networks/prune")
def prune_networks(request: Request, filters: str = "") -> dict[str, Any]:
    removed = networks_of(request).prune(parse_filters(filters))
    request.app.state.daemon.events.publish("network", "prune", "", {})
    return {"NetworksDeleted": removed}


@router.post("/networks/{ref}/connect")
async def connect_network(request: Request, ref: str) -> Response:
    body = await json_object(request)
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise InvalidArgument("no container specified")
    req = EndpointRequest.from_api(body.get("EndpointConfig"))
    svc = networks_of(request)
    await run_in_threadpool(svc.connect, ref, container, req)
    return Response(status_code=200)


@router.post("/networks/{ref}/disconnect")
async def disconnect_network(request: Request, ref: str) -> Response:
    body = await json_object(request)
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise InvalidArgument("no container specified")
    svc = networks_of(request)
    await run_in_threadpool(svc.disconnect, ref, container, bool(body.get("Force")))
    return Response(status_code=200)
