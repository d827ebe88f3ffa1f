"""The Engine API's image endpoints: pull/import, list, inspect, history, tag, remove, push,
save/load, prune, search.

What it is for: each handler parses a request as dockerd does (names: ``fromImage=busybox&tag=
latest``, ``fromImage=busybox:1.36``, ``tag=sha256:...``; ``X-Registry-Auth``; Docker's filter
JSON), calls the daemon's ``ImageService`` (``request.app.state.daemon.images``), and answers in
Docker's shapes (``api.image_views``) and streams (``api.progress``). Blocking work runs in worker
threads (sync handlers, or ``run_streamed``); containerd errors are raised as they are and mapped
to HTTP statuses by the app's one error handler. Events (``pull``, ``push``, ``tag``, ``untag``,
``delete``, ``import``, ``load``, ``save``) go to ``daemon.events``.

``DELETE`` asks ``daemon.containers.image_in_use(image_id)`` (a bool or a
``containerd.images.ContainerUse``) when the daemon has containers; without them no image is in
use. ``noprune`` is accepted and ignored: the store's GC decides what content is still needed.

Streams follow dockerd's timing: a pull sends nothing until its reference resolved, so ``docker
pull nosuch`` gets an HTTP error (404, Docker's message); a push starts with "The push refers to
repository" and reports even a missing image inside the stream, as dockerd does. Sizes, times and
IDs are documented in ``api.image_views``.

What it must never do: hold the event loop during image work (bodies are spooled, work runs in
threads), or echo ``X-Registry-Auth`` anywhere.
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from pydeskd.api import image_requests, image_views
from pydeskd.api.app import api_version
from pydeskd.api.auth import AuthConfig, login
from pydeskd.api.image_requests import credentials_of, parse_filters, platform_of, pull_reference
from pydeskd.api.progress import (
    Emit,
    PullRenderer,
    PushRenderer,
    emit_messages,
    encode,
    load_event,
    run_streamed,
    status,
    stream_line,
)
from pydeskd.api.versions import ApiVersion
from pydeskd.containerd import oci
from pydeskd.containerd.errors import InvalidArgument, NotFound, Unauthorized
from pydeskd.containerd.images import DeleteItem, InUse
from pydeskd.containerd.progress import Event
from pydeskd.containerd.reference import Reference, parse_reference
from pydeskd.containerd.registry import Credentials
from pydeskd.containerd.service import ImageService

# parse_filters: Docker's filters JSON, also read by the other routers through this module.
__all__ = ["parse_filters", "router"]

router = APIRouter()

JSON_STREAM = "application/json"
TAR = "application/x-tar"
# Request bodies (load, import) are spooled in memory up to this, then to a file in the image root.
SPOOL_IN_MEMORY = 8 << 20
_BODY_CHUNK = 1 << 20


class EventSink(Protocol):
    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str]) -> None: ...


def _daemon(request: Request) -> Any:
    return request.app.state.daemon


def _images(request: Request) -> ImageService:
    svc: ImageService = _daemon(request).images
    return svc


def _publish(request: Request, action: str, actor_id: str,
             attributes: Mapping[str, str] | None = None) -> None:
    events: EventSink | None = getattr(_daemon(request), "events", None)
    if events is not None:
        events.publish("image", action, actor_id, dict(attributes or {}))


def _in_use(request: Request) -> InUse | None:
    containers = getattr(_daemon(request), "containers", None)
    check = getattr(containers, "image_in_use", None)
    return check if callable(check) else None


async def _spool_body(request: Request, svc: ImageService) -> tempfile.SpooledTemporaryFile[bytes]:
    """The request body in a spooled file (rewound); big bodies go to the image root's disk."""
    spool_dir = svc.stores.root / "tmp"
    spool_dir.mkdir(exist_ok=True)
    spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=SPOOL_IN_MEMORY, dir=str(spool_dir))
    try:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


# --- pull and import ----------------------------------------------------------------------


@router.post("/images/create")
async def create_image(
        request: Request, *,
        from_image: Annotated[str, Query(alias="fromImage")] = "",
        from_src: Annotated[str, Query(alias="fromSrc")] = "",
        repo: str = "", tag: str = "", message: str = "", platform: str = "",
        changes: Annotated[list[str] | None, Query()] = None,
        x_registry_auth: Annotated[str | None, Header()] = None) -> Response:
    """``docker pull`` (``fromImage``) or ``docker import`` (``fromSrc=-``, the tar as body)."""
    svc = _images(request)
    if from_image:
        return await _pull(request, svc, pull_reference(from_image, tag),
                           platform_of(platform), credentials_of(x_registry_auth))
    if from_src:
        return await _import(request, svc, from_src,
                             _ImportSpec(repo, tag, message, tuple(changes or ()),
                                         platform_of(platform)))
    raise InvalidArgument("either fromImage or fromSrc must be given")


async def _pull(request: Request, svc: ImageService, ref: Reference,
                platform: oci.Platform | None, creds: Credentials | None) -> Response:
    def job(emit: Emit) -> None:
        renderer = PullRenderer(ref)
        lock = threading.Lock()

        def report(event: Event) -> None:
            with lock:  # layers report from several download threads
                emit_messages(emit, renderer.event(event))

        result = svc.pull(ref, platform=platform, credentials=creds, reporter=report)
        with lock:
            emit_messages(emit, renderer.done(result.target.digest, result.downloaded))
        _publish(request, "pull", ref.familiar, {"name": ref.familiar_name})

    try:
        chunks = await run_streamed(job, name="api-pull")
    except Unauthorized as e:
        # moby answers an anonymous refusal as NotFound (404), "pull access denied for X,
        # repository does not exist or may require 'docker login'": a 401 would make the docker
        # CLI prompt for a login instead of failing. Refused credentials stay a 401.
        if str(e).startswith("pull access denied"):
            raise NotFound(str(e)) from None
        raise
    return StreamingResponse(chunks, media_type=JSON_STREAM)


@dataclass(frozen=True)
class _ImportSpec:
    repo: str
    tag: str
    message: str
    changes: tuple[str, ...]
    platform: oci.Platform | None


async def _import(request: Request, svc: ImageService, source: str,
                  spec: _ImportSpec) -> Response:
    repo, tag, platform = spec.repo, spec.tag, spec.platform
    if source != "-":
        raise InvalidArgument("importing from a URL is not supported: send the archive as the "
                              "request body (fromSrc=-)")
    name: str | None = None
    if repo:
        ref = parse_reference(repo, default_tag=None)
        if ref.digest is not None:
            raise InvalidArgument("cannot import to a digest reference")
        name = str(ref.with_tag(tag or ref.tag or "latest"))
    if platform is not None and platform.normalized() != svc.platform.normalized():
        raise InvalidArgument(f"importing for platform {platform} is not supported "
                              f"(this daemon is {svc.platform})")
    body = await _spool_body(request, svc)

    def job(emit: Emit) -> None:
        with body:
            loaded = svc.import_rootfs(body, name=name, changes=spec.changes,
                                       message=spec.message)
        emit(encode(status(loaded.id)))
        # moby names the image ID here too; the imported name tells a watcher more (and the
        # daemon's event tests pin it).
        familiar = parse_reference(name, default_tag=None).familiar if name else loaded.id
        _publish(request, "import", loaded.id, {"name": familiar})

    return StreamingResponse(await run_streamed(job, name="api-import"), media_type=JSON_STREAM)


# --- records ---------------------------------------------------------------------------------


@router.get("/images/json")
def list_images(request: Request, all: bool = False, filters: str = "",
                digests: bool = False) -> list[dict[str, Any]]:
    """``docker images``: one entry per image ID (``all`` changes nothing: there are no
    intermediate images in this store)."""
    svc = _images(request)
    records = svc.stores.images.list(
        parse_filters(filters),
        config_labels=lambda image: image_views.config_labels(svc, image))
    old_client = api_version(request) < ApiVersion(1, 44)
    out = [image_views.summary(svc, group, virtual_size=old_client)
           for group in image_views.group_by_id(records)]
    out.sort(key=lambda entry: entry["Created"], reverse=True)
    return out


@router.get("/images/search")
def search_images() -> JSONResponse:
    return JSONResponse({"message": "image search is not supported by pydeskd (it has no "
                                    "index server); search the registry's own web site"},
                        status_code=501)


@router.get("/images/get")
async def save_images(request: Request,
                      names: Annotated[list[str] | None, Query()] = None,
                      platform: Annotated[list[str] | None, Query()] = None) -> Response:
    """``docker save A B [--platform P]``: one tar with every named image."""
    return await _save(request, names or [], _one_platform(platform))


def _one_platform(values: Sequence[str] | None) -> oci.Platform | None:
    platforms = image_requests.platforms_of(values or ())
    if len(platforms) > 1:
        raise InvalidArgument("saving several platforms (but not all) is not supported: "
                              "give one --platform, or none for every platform present")
    return platforms[0] if platforms else None


@router.post("/images/load")
async def load_images(request: Request, quiet: bool = False,
                      platform: Annotated[list[str] | None, Query()] = None) -> Response:
    """``docker load``: a ``docker save`` or OCI layout tar as the body."""
    svc = _images(request)
    if image_requests.platforms_of(platform or ()):
        raise InvalidArgument("docker load --platform is not supported: load the whole archive")
    body = await _spool_body(request, svc)

    def job(emit: Emit) -> None:
        def report(event: Event) -> None:
            if not quiet:
                emit_messages(emit, load_event(event))

        with body:
            loaded = svc.load(body, report)
        for image in loaded:
            emit(encode(stream_line(image.message + "\n")))
            familiar = parse_reference(image.name, default_tag=None).familiar \
                if image.name else image.id
            _publish(request, "load", image.id, {"name": familiar})
        if not loaded:
            emit(encode(stream_line("")))

    return StreamingResponse(await run_streamed(job, name="api-load"), media_type=JSON_STREAM)


@router.post("/images/prune")
def prune_images(request: Request, filters: str = "") -> dict[str, Any]:
    """``docker image prune [-a]``: ``dangling=false`` prunes every image no container uses;
    ``until=<duration|time>``, ``label=k[=v]`` and ``label!=k[=v]`` narrow the choice."""
    parsed = parse_filters(filters)
    for key in parsed:
        if key not in ("dangling", "until", "label", "label!"):
            raise InvalidArgument(f"invalid filter '{key}'")
    unused = False
    for value in parsed.get("dangling", ()):
        if value.lower() not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid filter 'dangling={value}'")
        unused = value.lower() in ("false", "0")
    svc = _images(request)
    used = _in_use(request)
    spared = image_requests.spared_by_filters(svc, parsed)

    def in_use(image_id: str) -> bool:
        # The service prunes what no container uses; an image the filters leave out counts
        # as used, so one prune (and one GC) follows the service's own rules.
        if spared is not None and spared(image_id):
            return True
        return bool(used is not None and used(image_id))

    deleted, gc = svc.prune(unused=unused, in_use=in_use)
    _publish_removal(request, deleted, "")
    return {"ImagesDeleted": [item.to_json() for item in deleted] or None,
            "SpaceReclaimed": gc.bytes_reclaimed}


@router.post("/auth")
async def auth(request: Request) -> dict[str, str]:
    """``docker login``: check the credentials against the registry."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidArgument("invalid auth configuration: body is not JSON") from None
    config = AuthConfig.from_json(body)
    return await run_in_threadpool(login, _images(request), config)


@router.get("/distribution/{name:path}/json")
def distribution_inspect(request: Request, name: str,
                         x_registry_auth: Annotated[str | None, Header()] = None,
                         ) -> dict[str, Any]:
    """``docker-py images.get_registry_data`` / ``docker manifest``-style lookups: what the
    registry serves under ``name`` (its descriptor) and the platforms it has."""
    svc = _images(request)
    ref = parse_reference(name, default_tag="latest")
    return image_requests.registry_data(svc.client(credentials_of(x_registry_auth)), ref)


# --- one image (the name may hold slashes: these come after the fixed paths) ----------------


@router.get("/images/{name:path}/json")
def inspect_image(request: Request, name: str) -> dict[str, Any]:
    svc = _images(request)
    version = api_version(request)
    return image_views.inspect(svc, svc.resolve(name), legacy=(version.major, version.minor))


@router.get("/images/{name:path}/history")
def image_history(request: Request, name: str) -> list[dict[str, Any]]:
    svc = _images(request)
    return image_views.history(svc, svc.resolve(name))


@router.get("/images/{name:path}/get")
async def save_image(request: Request, name: str,
                     platform: Annotated[list[str] | None, Query()] = None) -> Response:
    return await _save(request, [name], _one_platform(platform))


@router.post("/images/{name:path}/tag", status_code=201)
def tag_image(request: Request, name: str, repo: str = "", tag: str = "") -> Response:
    """``docker tag SOURCE REPO[:TAG]``: 201 and no body, as dockerd."""
    if not repo:
        raise InvalidArgument("repository name must have at least one component")
    ref = parse_reference(repo, default_tag=None)
    if ref.digest is not None:
        raise InvalidArgument("refusing to create a tag with a digest reference")
    ref = ref.with_tag(tag or ref.tag or "latest")
    image = _images(request).tag(name, str(ref))
    _publish(request, "tag", image.id, {"name": ref.familiar})
    return Response(status_code=201)


@router.delete("/images/{name:path}")
def remove_image(request: Request, name: str, force: bool = False,
                 noprune: bool = False) -> list[dict[str, str]]:
    """``docker rmi``: Untagged/Deleted lines; 409 for Docker's conflicts."""
    svc = _images(request)
    image_id = svc.resolve(name).id
    items = svc.remove(name, force=force, in_use=_in_use(request))
    _publish_removal(request, items, image_id)
    return [item.to_json() for item in items]


def _publish_removal(request: Request, items: Sequence[DeleteItem], image_id: str) -> None:
    """``untag`` (actor: the image ID, name: the untagged name) and ``delete`` events, as
    moby's; an image's Untagged lines come before its Deleted line, which names its ID."""
    untagged: list[str] = []
    for item in items:
        if item.untagged:
            untagged.append(item.untagged)
            continue
        for ref in untagged:
            _publish(request, "untag", item.deleted, {"name": ref})
        untagged.clear()
        _publish(request, "delete", item.deleted, {"name": item.deleted})
    for ref in untagged:
        _publish(request, "untag", image_id, {"name": ref})


@router.post("/images/{name:path}/push")
async def push_image(request: Request, name: str, tag: str = "",
                     x_registry_auth: Annotated[str | None, Header()] = None) -> Response:
    """``docker push NAME[:TAG]``; no tag: every tag of the repository, as dockerd."""
    svc = _images(request)
    creds = credentials_of(x_registry_auth)
    ref = parse_reference(name, default_tag=None)
    if tag:
        ref = ref.with_digest(tag) if tag.startswith("sha256:") else ref.with_tag(tag)

    def job(emit: Emit) -> None:
        # As dockerd: the stream starts with the repository line, and an image that is not
        # there is the stream's error (docker-py's push() returns it rather than raising).
        renderer = PushRenderer(ref)
        emit_messages(emit, renderer.start())
        pinned = ref.tag is not None or ref.digest is not None
        refs = [ref] if pinned else image_requests.tags_of(svc, ref)
        records = []
        for each in refs:
            try:
                records.append(svc.stores.images.get(str(each)))
            except NotFound:
                raise NotFound(f"An image does not exist locally with the tag: "
                               f"{each.familiar_name}") from None
        renderer.hide(image_requests.config_digests(svc, (r.target for r in records)))
        lock = threading.Lock()

        def report(event: Event) -> None:
            with lock:
                emit_messages(emit, renderer.event(event))

        for each in refs:
            result = svc.push(each, credentials=creds, reporter=report)
            with lock:
                emit_messages(emit, renderer.done(each.tag or result.digest, result.digest,
                                                  result.size))
            _publish(request, "push", each.familiar, {"name": each.familiar_name})

    return StreamingResponse(await run_streamed(job, name="api-push"), media_type=JSON_STREAM)


class _EmitWriter(io.RawIOBase):
    """A write-only file whose writes become stream chunks (wrapped in a buffer)."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if chunk:
            self._emit(chunk)
        return len(chunk)


def _no_tail(exc: BaseException) -> bytes | None:
    return None  # a tar stream cannot carry an error message: the connection is cut


async def _save(request: Request, names: Sequence[str],
                platform: oci.Platform | None = None) -> Response:
    svc = _images(request)
    if not names:
        raise InvalidArgument("no image names given")
    for name in names:
        svc.resolve(name)  # a missing image is a 404 before anything is sent

    def job(emit: Emit) -> None:
        with io.BufferedWriter(_EmitWriter(emit), _BODY_CHUNK) as out:
            svc.save(out, names, platform)
        for name in names:
            _publish(request, "save", svc.resolve(name).id, {"name": name})

    return StreamingResponse(await run_streamed(job, name="api-save", on_error=_no_tail),
                             media_type=TAR)

