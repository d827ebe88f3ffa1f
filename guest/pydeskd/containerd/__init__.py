"""The containerd layer: content store, registry client, image store, overlay snapshotter, tasks.

No build and no user-facing API: the daemon layer is its only caller.
"""
