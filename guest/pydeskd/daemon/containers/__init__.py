"""Containers: records, lifecycle, exec, attach and logs -- the daemon's container objects.

What it is for: the Python API the Engine API routes call for ``/containers/...`` and
``/exec/...``. :mod:`.record`/:mod:`.state` are the container record and its state machine,
:mod:`.store` keeps them on disk and resolves references, :mod:`.service` (``ContainerService``)
drives images, snapshots, shims and the runtime, and the pure helpers (:mod:`.names`,
:mod:`.filters`, :mod:`.restart`, :mod:`.signals`, :mod:`.attach`, :mod:`.mounts`,
:mod:`.files`, :mod:`.spec`) hold Docker's rules. Config types, the image-config merge and
the OCI spec are :mod:`pydeskd.daemon.config_types` and :mod:`pydeskd.daemon.ocispec`.

What it must never do: speak HTTP (the routes do), or reach past the image service, the
snapshotter, the shim client or the runtime's CLI to touch their state directly.
"""
