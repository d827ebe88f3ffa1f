"""Merging the image's config into a new container's Config, as Docker does at create.

Docker's rules (moby's merge in daemon/create): the user's Env comes first, then the image's
variables the user did not set; labels, exposed ports and volumes are unions (the user wins);
an empty User, WorkingDir, StopSignal or Healthcheck takes the image's; without an Entrypoint
from the user the image's is taken, and then, only if the user gave no Cmd, the image's Cmd
(an Entrypoint from the user drops the image's Cmd). ``Path``/``Args`` come from the result.

Pure (dicts in, dicts out).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydeskd.containerd.errors import InvalidArgument


def merge(user: Mapping[str, Any], image: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(user))
    if not out.get("User"):
        out["User"] = image.get("User") or ""
    env = list(out.get("Env") or [])
    keys = {e.partition("=")[0] for e in env}
    for item in image.get("Env") or []:
        if item.partition("=")[0] not in keys:
            env.append(item)
    out["Env"] = env
    for key in ("Labels", "ExposedPorts", "Volumes"):
        merged = dict(image.get(key) or {})
        merged.update(out.get(key) or {})
        # Docker shows empty Labels as {}, empty ExposedPorts and Volumes as null.
        out[key] = merged if key == "Labels" else (merged or None)
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = list(image.get("Cmd") or []) or None
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = list(image.get("Entrypoint") or []) or None
    if not out.get("WorkingDir"):
        out["WorkingDir"] = image.get("WorkingDir") or ""
    if not out.get("StopSignal") and image.get("StopSignal"):
        out["StopSignal"] = image["StopSignal"]
    health = out.get("Healthcheck")
    image_health = image.get("Healthcheck")
    if image_health:
        if not health:
            out["Healthcheck"] = dict(image_health)
        else:
            merged_health = dict(image_health)
            merged_health.update({k: v for k, v in health.items() if v})
            out["Healthcheck"] = merged_health
    return out


def entrypoint_and_args(config: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(Path, Args) of a merged config. Raises InvalidArgument "No command specified"."""
    entrypoint = list(config.get("Entrypoint") or [])
    cmd = list(config.get("Cmd") or [])
    argv = [*entrypoint, *cmd] if entrypoint else cmd
    if not argv:
        raise InvalidArgument("No command specified")
    return argv[0], argv[1:]
