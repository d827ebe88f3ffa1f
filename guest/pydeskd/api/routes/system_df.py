"""``GET /system/df``: what ``docker system df [-v]`` prints -- layers, images, containers,
volumes and the build cache (always empty: pydeskd has no builder).

What it is for: sizes as disk usage. Images are measured by their unpacked layers (each layer's
snapshot, the host's platform): ``Size`` is the sum over the image's chain, ``SharedSize`` the
part in layers another image also uses, ``Containers`` how many containers use the image;
``LayersSize`` counts each layer once. Containers carry ``SizeRw``/``SizeRootFs``, volumes
``UsageData`` (size of ``_data``, number of containers referencing it). The ``type`` query
(API 1.42+) limits the answer to the kinds asked for, as dockerd does.

What it must never do: fail the whole report because one image or container cannot be measured
(it counts 0 for that one).
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from pydeskd.api import image_views
from pydeskd.containerd.errors import ContainerdError, InvalidArgument
from pydeskd.containerd.service import ImageService
from pydeskd.containerd.unpack import chain_ids
from pydeskd.daemon.containers.filters import ListOptions

router = APIRouter()
KINDS = ("container", "image", "volume", "build-cache")


def _chain_sizes(svc: ImageService, target: Any) -> list[tuple[str, int]]:
    found = image_views.platform_image(svc, target)
    if found is None or not found.config.diff_ids:
        return []
    out = []
    for chain in chain_ids(found.config.diff_ids):
        size = 0
        with contextlib.suppress(ContainerdError, OSError):
            size = svc.stores.snapshotter.usage(chain).size
        out.append((chain, size))
    return out


def images_usage(svc: ImageService, containers: list[dict[str, Any]]
                 ) -> tuple[int, list[dict[str, Any]]]:
    """(LayersSize, Images) for ``system df``."""
    groups = image_views.group_by_id(svc.list())
    chains = {id(group): _chain_sizes(svc, group[0].target) for group in groups}
    users: dict[str, int] = {}
    layer_size: dict[str, int] = {}
    for sizes in chains.values():
        for chain, size in sizes:
            users[chain] = users.get(chain, 0) + 1
            layer_size[chain] = size
    per_image: dict[str, int] = {}
    for c in containers:
        per_image[c["ImageID"]] = per_image.get(c["ImageID"], 0) + 1
    out = []
    for group in groups:
        entry = image_views.summary(svc, group)
        sizes = chains[id(group)]
        entry["Size"] = sum(size for _, size in sizes)
        entry["SharedSize"] = sum(size for chain, size in sizes if users[chain] > 1)
        entry["Containers"] = per_image.get(group[0].id, 0)
        out.append(entry)
    out.sort(key=lambda e: e["Created"], reverse=True)
    return sum(layer_size.values()), out


def disk_usage(daemon: Any, kinds: set[str]) -> dict[str, Any]:
    report: dict[str, Any] = {"LayersSize": 0, "Images": None, "Containers": None,
                              "Volumes": None, "BuildCache": None}
    containers: list[dict[str, Any]] = []
    if daemon.containers is not None and kinds & {"container", "image"}:
        containers = daemon.containers.list(ListOptions(all=True), size=True)
    if "container" in kinds:
        report["Containers"] = containers
    if "image" in kinds:
        report["LayersSize"], report["Images"] = images_usage(daemon.images, containers)
    if "volume" in kinds:
        volumes = getattr(daemon, "volumes", None)
        report["Volumes"] = volumes.disk_usage() if volumes is not None else []
    if "build-cache" in kinds:
        report["BuildCache"] = []
    return report


@router.get("/system/df")
async def system_df(request: Request) -> dict[str, Any]:
    kinds = set(request.query_params.getlist("type") or KINDS)
    for kind in kinds:
        if kind not in KINDS:
            raise InvalidArgument(f"unknown object type: {kind}")
    result: dict[str, Any] = await run_in_threadpool(disk_usage, request.app.state.daemon,
                                                     kinds)
    return result
