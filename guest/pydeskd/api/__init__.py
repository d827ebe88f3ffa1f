"""The dockerd layer, HTTP side: the Docker Engine API (routers per object kind, streams, hijack).

How it fits together:

- ``server.HttpFront`` owns the sockets and parses HTTP/1.1 with h11. Requests matching a
  ``hijack.HijackRoute`` (attach, exec start) get the raw socket; every other request goes
  through ``asgi_bridge`` to the FastAPI app.
- ``app.create_app(daemon)`` builds that app from the modules in ``app.ROUTE_MODULES``; each
  exposes ``router: APIRouter`` and optionally ``hijack_routes: list[HijackRoute]``. Routes reach
  the daemon as ``request.app.state.daemon`` and the API version as ``app.api_version(request)``.
- Routes raise the containerd error kinds (``pydeskd.containerd.errors``: NotFound 404,
  AlreadyExists/FailedPrecondition 409, InvalidArgument 400, Unauthorized 401, Unavailable 503,
  NotModified 304); ``errors`` turns them into Docker's ``{"message": ...}`` in one place.

Holds no container or image logic of its own: it parses requests and calls the daemon layer.
"""
