"""Engine API routers, one module per object kind; each exposes ``router`` (and optionally
``hijack_routes``) and is listed in ``pydeskd.api.app.ROUTE_MODULES``."""
