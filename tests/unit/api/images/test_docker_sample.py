"""Our streams against Docker's own, recorded from Docker Engine 20.10.24 (Debian's docker.io).

The samples in ``docker_20_10/`` were recorded once with ``tests/support/docker_engine.py``: the
``multi`` test image (built bit for bit the same on every run, so its digests are stable) pushed to
a local registry as ``library/busybox:latest``, that registry set as the engine's mirror, then
``POST /v1.41/images/create?fromImage=busybox&tag=latest`` twice, a push of it to
``test/pushed:v1`` twice, a push to ``test/other:v1`` (cross-repository mounts) and a push of a
missing image, each reply saved as it came off the socket.

Every recorded line must come out of our message builders byte for byte; the renderers, fed the
events that produced Docker's lines, must write Docker's lines (for pulls, "Pulling fs layer" is
written when a layer is first seen rather than all at once: see ``PullRenderer``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pydeskd.api.progress import (
    PullRenderer,
    PushRenderer,
    blob_status,
    encode,
    error,
    status,
)
from pydeskd.containerd.progress import Event, Status
from pydeskd.containerd.reference import parse_reference

SAMPLES = Path(__file__).parent / "docker_20_10"
DIGEST = "sha256:f54ecdf6c9aa4b45f81b090234304b5fa8b9e51ef20a0c8df40be9560b4a8952"
PUSHED = "sha256:e1b82377b325586a902b8733e80384b4f67fa8f27058694b36fcef73c6b5d19f"


def lines(name: str) -> list[bytes]:
    raw = (SAMPLES / name).read_bytes()
    assert raw.endswith(b"\r\n")
    return [line + b"\r\n" for line in raw.split(b"\r\n")[:-1]]


def rebuild(message: dict[str, Any]) -> dict[str, Any]:
    """The same message, made by our builders from its fields."""
    if "errorDetail" in message:
        return error(message["error"])
    if "aux" in message:
        aux = message["aux"]
        return PushRenderer(parse_reference("x")).done(aux["Tag"], aux["Digest"],
                                                       aux["Size"])[1]
    if "progressDetail" in message:
        detail = message["progressDetail"]
        return blob_status(message["status"], message["id"], detail.get("current", 0),
                           detail.get("total", 0), with_bytes=bool(detail))
    return status(message["status"], message.get("id", ""))


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.jsonl")))
def test_every_recorded_line_is_built_byte_for_byte(name: str) -> None:
    for line in lines(name):
        assert encode(rebuild(json.loads(line))) == line


def digest_of(short_id: str) -> str:
    return "sha256:" + short_id + "0" * 52


def events_of(name: str) -> list[Event]:
    """The containerd events behind a recorded stream's per-layer lines."""
    out = []
    for line in lines(name):
        m = json.loads(line)
        if "id" not in m or "progressDetail" not in m or m["status"] == "Pulling fs layer":
            continue
        text, detail = m["status"], ""
        if text.startswith("Mounted from "):
            text, detail = "Mounted from", text.removeprefix("Mounted from ")
        d = m["progressDetail"]
        out.append(Event(digest_of(m["id"]), Status(text), d.get("current", 0),
                         d.get("total", 0), detail))
    return out


def test_pull_renderer_writes_dockers_lines() -> None:
    recorded = lines("pull.jsonl")
    renderer = PullRenderer(parse_reference("busybox:latest"))
    ours = [encode(m) for ev in events_of("pull.jsonl") for m in renderer.event(ev)]
    ours += [encode(m) for m in renderer.done(DIGEST, downloaded=True)]
    fs_layer = b'"status":"Pulling fs layer"'
    assert [x for x in ours if fs_layer not in x] == [x for x in recorded if fs_layer not in x]
    assert sorted(x for x in ours if fs_layer in x) == sorted(x for x in recorded
                                                              if fs_layer in x)
    for i, line in enumerate(ours):  # each layer's first line is its "Pulling fs layer"
        m = json.loads(line)
        if "progressDetail" in m and m["status"] != "Pulling fs layer":
            first = next(json.loads(x) for x in ours if json.loads(x).get("id") == m["id"])
            assert first["status"] == "Pulling fs layer", i


def test_pull_renderer_up_to_date_is_dockers() -> None:
    renderer = PullRenderer(parse_reference("busybox"))
    ours = [encode(m) for m in renderer.done(DIGEST, downloaded=False)]
    assert ours == lines("pull_again.jsonl")


@pytest.mark.parametrize("name", ["push.jsonl", "push_again.jsonl", "push_mount.jsonl"])
def test_push_renderer_writes_dockers_lines(name: str) -> None:
    recorded = lines(name)
    first = json.loads(recorded[0])["status"]
    repository = first.removeprefix("The push refers to repository [").removesuffix("]")
    renderer = PushRenderer(parse_reference(repository + ":v1"),
                            hidden=[digest_of("c0f1g0000000")])
    ours = [encode(m) for m in renderer.start()]
    ours += [encode(m) for ev in events_of(name) for m in renderer.event(ev)]
    ours += [encode(m) for m in renderer.done("v1", PUSHED, 1149)]
    assert ours == recorded
