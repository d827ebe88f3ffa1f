"""A real pull through pydeskd against Docker Engine 20.10's recorded stream for the same image
(``tests/unit/api/images/docker_20_10/pull.jsonl``: the ``multi`` test image, whose digests
are the same on every build)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.image_fixtures import BuiltLayout
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry

SAMPLE = Path(__file__).parents[2] / "unit/api/images/docker_20_10/pull.jsonl"
# A layer's statuses in Docker's order; "Downloading"/"Extracting" repeat with bytes.
ORDER = ["Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
         "Download complete", "Extracting", "Pull complete"]


def api(daemon: Pydeskd, method: str, path: str) -> bytes:
    return subprocess.run(["curl", "-sS", "--unix-socket", str(daemon.socket), "-X", method,
                           f"http://pydeskd{path}"], capture_output=True, check=True,
                          timeout=120).stdout


def per_layer(raw: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in raw.split(b"\r\n"):
        if line:
            m = json.loads(line)
            if "progressDetail" in m:
                out.setdefault(m["id"], []).append(m["status"])
    return out


def test_pull_stream_has_dockers_shape(pydeskd: Pydeskd, mirror: Registry,
                                       image_layouts: dict[str, BuiltLayout]) -> None:
    mirror.push_layout(image_layouts["multi"].path, "library/busybox:latest")
    ours = api(pydeskd, "POST", "/v1.41/images/create?fromImage=busybox&tag=latest")
    docker = SAMPLE.read_bytes()
    assert ours.endswith(b"\r\n")
    ours_lines, docker_lines = ours.split(b"\r\n"), docker.split(b"\r\n")
    # The same first line and the same two last lines, byte for byte.
    assert ours_lines[0] == docker_lines[0]
    assert ours_lines[-3:] == docker_lines[-3:]
    ours_layers, docker_layers = per_layer(ours), per_layer(docker)
    assert set(ours_layers) == set(docker_layers)
    for layer, statuses in ours_layers.items():
        assert statuses[0] == "Pulling fs layer" and statuses[-1] == "Pull complete"
        assert statuses.count("Pulling fs layer") == 1 and statuses.count("Pull complete") == 1
        positions = [ORDER.index(s) for s in statuses]
        assert positions == sorted(positions), (layer, statuses)
        assert set(statuses) <= set(ORDER)
        assert set(docker_layers[layer]) <= set(ORDER)
    again = api(pydeskd, "POST", "/v1.41/images/create?fromImage=busybox&tag=latest")
    assert again == (SAMPLE.parent / "pull_again.jsonl").read_bytes()
