"""Volumes: Docker's ``local`` volume driver, its records, and filling new volumes from images.

What it is for: the daemon's volume objects. :mod:`.model` is a volume's record and its API
JSON (name rules, anonymous label, driver options), :mod:`.store` keeps one JSON record per
volume beside its data (``<data-root>/volumes/<name>/{volume.json,_data}``), :mod:`.filters`
holds ``docker volume ls``/``prune``'s filter rules, :mod:`.fill` copies an image's content into
a new volume (confined to the rootfs and the volume), and :mod:`.service` (``VolumeService``) is
what the API routes and the container service call: create/list/inspect/remove/prune, and the
container hooks (get a volume for a mount, fill it, report mounts, release it at removal).

Which container uses which volume is never stored here: it is derived from the container
records (a callback the container service installs), so it survives daemon restarts.

What it must never do: speak HTTP, touch a path outside the volumes root and the rootfs it is
given to read, or remove a volume a container still references.
"""

from pydeskd.daemon.volumes.model import ANONYMOUS_LABEL, Volume
from pydeskd.daemon.volumes.service import VolumeService

__all__ = ["ANONYMOUS_LABEL", "Volume", "VolumeService"]
