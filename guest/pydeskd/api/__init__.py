"""The dockerd layer, HTTP side: the Docker Engine API (routers per object kind, streams, hijack).

Holds no container or image logic of its own: it parses requests and calls the daemon layer.
"""
