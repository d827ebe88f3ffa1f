"""The FastAPI application of the Engine API: routers, version prefixes, error handlers.

What it is for: ``create_app(daemon)`` builds the ASGI app the HTTP front serves, and
``hijack_routes()`` the attach/exec routes it serves itself. Each module in ``ROUTE_MODULES``
exposes ``router: APIRouter`` and may expose ``hijack_routes: list[HijackRoute]``; a new object
kind is one module and one line here.

``/v1.NN/...`` and unprefixed paths reach the same routes: a small ASGI middleware strips the
prefix, refuses versions out of range with Docker's message, and records the version in
``scope["state"]["api_version"]`` (``api_version(request)`` reads it).

What it must never do: hold container or image logic; routes call the daemon.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pydeskd.api import errors
from pydeskd.api.hijack import HijackRoute
from pydeskd.api.versions import ApiVersion, check_version, split_version
from pydeskd.containerd.errors import InvalidArgument

# A listed module that does not exist yet is skipped (see _route_modules), so the containers,
# exec and volumes routers join the app by landing under these names.
ROUTE_MODULES: tuple[str, ...] = (
    "pydeskd.api.routes.system",
    "pydeskd.api.routes.images",
    "pydeskd.api.routes.containers",
    "pydeskd.api.routes.exec",
    "pydeskd.api.routes.volumes",
    "pydeskd.api.routes.networks",
)


def _route_modules(names: Iterable[str]) -> list[Any]:
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            # A listed module another helper has not landed yet; anything else is a real error.
            if exc.name != name:
                raise
    return modules


class VersionPrefix:
    """ASGI middleware: ``/v1.45/x`` -> ``/x`` with the version checked and recorded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            versioned = split_version(scope["path"])
            version = check_version(versioned.version)
        except InvalidArgument as exc:
            status, body = errors.error_reply(exc)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        scope = dict(scope)
        if versioned.version is not None:
            scope["path"] = versioned.path
            raw = scope.get("raw_path")
            if isinstance(raw, bytes):
                scope["raw_path"] = b"/" + raw.split(b"/", 2)[2] if raw.count(b"/") >= 2 \
                    else b"/"
        state = dict(scope.get("state") or {})
        state["api_version"] = version
        scope["state"] = state
        await self.app(scope, receive, send)


def api_version(request: Request) -> ApiVersion:
    """The API version the request is served at."""
    version = request.scope.get("state", {}).get("api_version")
    if isinstance(version, ApiVersion):
        return version
    return check_version(None)


def create_app(daemon: Any, modules: Iterable[str] = ROUTE_MODULES) -> FastAPI:
    """The Engine API app over ``daemon`` (``app.state.daemon``)."""
    app = FastAPI(title="pydesk Engine API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.daemon = daemon
    errors.install(app)
    for module in _route_modules(modules):
        app.include_router(module.router)
        # Hijacked routes are served outside the app: a module that has them is given the
        # daemon here.
        bind = getattr(module, "bind", None)
        if callable(bind):
            bind(daemon)
    app.add_middleware(VersionPrefix)
    return app


def hijack_routes(modules: Iterable[str] = ROUTE_MODULES) -> list[HijackRoute]:
    routes: list[HijackRoute] = []
    for module in _route_modules(modules):
        routes.extend(getattr(module, "hijack_routes", ()))
    return routes
