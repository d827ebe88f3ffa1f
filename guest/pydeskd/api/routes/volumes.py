"""The Engine API's volume endpoints: create, list, inspect, remove, prune (and ``/system/df``,
whose router is included here: see :mod:`.system_df`).

What it is for: each handler reads the request as dockerd does (``VolumeCreateOptions`` JSON,
Docker's filters JSON, ``force``) and calls the daemon's ``VolumeService``
(``request.app.state.daemon.volumes``); errors are the volume layer's own (NotFound "get X: no
such volume", 409 "volume is in use - [IDs]", 400 for names, options and filters) mapped by the
app's one error handler. ``POST /volumes/prune`` below API 1.42 prunes named volumes too (the
``all`` filter came with 1.42, which made anonymous-only the default).

What it must never do: hold volume logic (the service does), or block the event loop (handlers
are sync: they run in worker threads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pydeskd.api.app import api_version
from pydeskd.api.bodies import json_object
from pydeskd.api.image_requests import parse_filters
from pydeskd.api.routes import system_df
from pydeskd.api.versions import ApiVersion
from pydeskd.containerd.errors import InvalidArgument, Unavailable
from pydeskd.daemon.volumes import VolumeService

router = APIRouter()
router.include_router(system_df.router)


def volumes_of(request: Request) -> VolumeService:
    service = getattr(request.app.state.daemon, "volumes", None)
    if service is None:
        raise Unavailable("volumes are not available in this daemon")
    assert isinstance(service, VolumeService)
    return service


def _bool(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def _string_map(obj: Any, field: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping) or not all(isinstance(v, str) for v in obj.values()):
        raise InvalidArgument(f"json: cannot unmarshal {field} into Go struct field "
                              f"CreateOptions.{field} of type map[string]string")
    return {str(k): v for k, v in obj.items()}


@router.post("/volumes/create", status_code=201)
async def create_volume(request: Request) -> JSONResponse:
    body = await json_object(request)
    name = body.get("Name") or ""
    driver = body.get("Driver") or ""
    if not isinstance(name, str) or not isinstance(driver, str):
        raise InvalidArgument("json: cannot unmarshal Name/Driver: want strings")
    if body.get("ClusterVolumeSpec"):
        raise InvalidArgument("cluster volumes need swarm mode, which pydeskd does not have")
    options = _string_map(body.get("DriverOpts"), "DriverOpts")
    labels = _string_map(body.get("Labels"), "Labels")
    svc = volumes_of(request)

    def job() -> dict[str, Any]:
        volume = svc.create(name or None, driver, options, labels)
        return svc.api(volume)

    return JSONResponse(await run_in_threadpool(job), status_code=201)


@router.get("/volumes")
def list_volumes(request: Request, filters: str = "") -> dict[str, Any]:
    return {"Volumes": volumes_of(request).list(parse_filters(filters)), "Warnings": []}


@router.post("/volumes/prune")
def prune_volumes(request: Request, filters: str = "") -> dict[str, Any]:
    svc = volumes_of(request)
    report = svc.prune(parse_filters(filters),
                       all_by_default=api_version(request) < ApiVersion(1, 42))
    daemon = request.app.state.daemon
    daemon.events.publish("volume", "prune", "",
                          {"reclaimed": str(report["SpaceReclaimed"])})
    return report


@router.get("/volumes/{name}")
def inspect_volume(request: Request, name: str, size: str | None = None) -> dict[str, Any]:
    return volumes_of(request).inspect(name, size=_bool(size))


@router.delete("/volumes/{name}", status_code=204)
def remove_volume(request: Request, name: str, force: str | None = None) -> Response:
    volumes_of(request).remove(name, force=_bool(force))
    return Response(status_code=204)


@router.put("/volumes/{name}")
def update_volume(name: str) -> JSONResponse:
    del name
    return JSONResponse({"message": "volume update is only for cluster volumes, which need "
                                    "swarm mode: pydeskd does not have it"}, status_code=400)
