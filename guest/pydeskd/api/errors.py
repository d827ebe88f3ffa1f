"""The one place that turns an exception into Docker's error reply: a status and ``{"message"}``.

What it is for: every route and hijack handler raises the containerd layer's error kinds
(``NotFound``, ``AlreadyExists``...) and never builds an error response itself; docker-py
(``docker/errors.py``) and the docker CLI read the status and the ``message`` field.

What it must never do: leak a traceback to the client (an unexpected error is logged with its
traceback and replied as a 500 with its message only), or answer 422: Docker never does, a
request it cannot read is a 400.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from pydeskd.containerd.errors import (
    AlreadyExists,
    ContainerdError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotModified,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

# Most specific first: NotModified is checked before its own bases could match.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (NotModified, 304),
    (NotFound, 404),
    (AlreadyExists, 409),
    (FailedPrecondition, 409),
    (InvalidArgument, 400),
    (Unauthorized, 401),
    (Unavailable, 503),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status Docker uses for this kind of error; 500 for anything unexpected."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def message_for(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def error_body(message: str) -> bytes:
    return json.dumps({"message": message}).encode() + b"\n"


def error_reply(exc: BaseException) -> tuple[int, bytes]:
    """(status, body) for ``exc``; logs unexpected ones with their traceback.

    A 304 carries no body (HTTP forbids one), as Docker's reply to starting a running container.
    """
    status = status_for(exc)
    if status == 500:
        log.error("unexpected error serving a request", exc_info=exc)
    if status == 304:
        return status, b""
    return status, error_body(message_for(exc))


def _json_reply(status: int, body: bytes) -> Response:
    if status == 304:
        return Response(status_code=304)
    return Response(body, status_code=status, media_type="application/json")


def validation_message(errors: Sequence[Any]) -> str:
    """One readable line from pydantic's error list: where, and what was wrong."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc)
        text = str(err.get("msg", "invalid value"))
        if err.get("type") == "json_invalid":
            text = "invalid JSON: " + str(err.get("ctx", {}).get("error", text))
            where = ""
        parts.append(f"{where}: {text}" if where else text)
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"message": validation_message(exc.errors())}, status_code=400)

    async def on_http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 304:
            return Response(status_code=304)
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        # Starlette's own 404/405 say "Not Found"; Docker says "page not found".
        if exc.status_code == 404 and message == "Not Found":
            message = "page not found"
        return JSONResponse({"message": message}, status_code=exc.status_code,
                            headers=exc.headers)

    async def on_error(_request: Request, exc: Exception) -> Response:
        return _json_reply(*error_reply(exc))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    # The containerd kinds are handled by Starlette's exception middleware and end there; the
    # catch-all goes to its server-error middleware, which replies and then re-raises to the
    # server (the front logs that at debug level only: error_reply already logged it).
    app.add_exception_handler(ContainerdError, on_error)
    app.add_exception_handler(Exception, on_error)
