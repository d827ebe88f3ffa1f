"""Bind-mount file sync, host <-> guest (watchdog on the host, inotify in the guest).

What it is for: ``SyncManager.guest_path(host_path)`` (``manager``) keeps a copy of each bind
source in the guest and returns its guest path; ``session`` runs one root (threads, first sync,
live loop), ``engine`` decides (agreed state, echoes, renames; ``resolve`` for conflicts),
``watcher`` feeds it host events, ``plan`` holds the pure rules,
``fstree`` applies changes atomically, ``wire`` frames the protocol, ``transport`` reaches the guest
side (``python3 -m pydeskd.syncd``) over SSH exec or a local pipe. See docs/sync.md.
Never loses data silently: conflicts follow one documented rule (``plan``).
"""
