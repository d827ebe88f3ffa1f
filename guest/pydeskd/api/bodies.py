"""Request bodies: the JSON of a POST, parsed once, with Docker's message for bad JSON.

What it is for: every route that takes a JSON body reads it here, so a malformed body is the
same 400 (``invalid JSON: ...``) everywhere; the caller checks the shape it wants with its own
message. It must never accept something that is not JSON (an empty body is ``empty``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from pydeskd.containerd.errors import InvalidArgument


async def json_body(request: Request, empty: Any = None) -> Any:
    """The body's JSON value; ``empty`` when the body is blank. Raises InvalidArgument."""
    raw = await request.body()
    if not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None


async def json_object(request: Request) -> Mapping[str, Any]:
    """A body that must be a JSON object (a blank body is an empty one)."""
    body = await json_body(request, {})
    if not isinstance(body, Mapping):
        raise InvalidArgument("invalid JSON: want an object")
    return body
