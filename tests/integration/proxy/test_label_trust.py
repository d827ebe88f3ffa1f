"""Finding 4 against a real pydeskd: an image whose LABEL names the port-bindings label, run
with ``-P`` (and ``-p 80``) through the proxy, gets the proxy's label (the container's label
wins the daemon's merge), so its forwards stay on 127.0.0.1; created straight on the daemon
(bypassing the proxy, the image's label inherited), the forwarder still does not trust it."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydesk.forward.desired import container_forwards
from pydesk.proxy import HOST_PORT_BINDINGS_LABEL
from tests.integration.proxy.conftest import Proxied
from tests.support.images import ImageLayout, build_layer, busybox_rootfs_entries

EVIL_IMAGE = "evil/widen:latest"
EVIL_LABEL = json.dumps({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": ""}]})


@pytest.fixture(scope="module")
def evil_tar() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="pd-evil-", dir="/tmp"))
    try:
        layout = ImageLayout(where / "layout")
        layout.add_image([build_layer(busybox_rootfs_entries())], tag=EVIL_IMAGE,
                         container_config={"Labels": {HOST_PORT_BINDINGS_LABEL: EVIL_LABEL},
                                           "ExposedPorts": {"80/tcp": {}},
                                           "Cmd": ["sleep", "60"]})
        out = where / "evil.tar"
        with tarfile.open(out, "w") as tar:
            for child in sorted((where / "layout").iterdir()):
                tar.add(child, arcname=child.name)
        yield out
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _inspect(p: Proxied, name: str) -> dict[str, object]:
    data = json.loads(p.out("inspect", name))
    assert isinstance(data, list)
    inspected = data[0]
    assert isinstance(inspected, dict)
    return inspected


def _forward_ips(inspected: dict[str, object]) -> set[str]:
    forwards = container_forwards(inspected).forwards
    assert forwards, inspected.get("NetworkSettings")
    return {f.host_ip for f in forwards}


def test_image_label_cannot_widen_publish_all(p: Proxied, evil_tar: Path) -> None:
    p.docker("load", "-i", str(evil_tar))
    try:
        for name, flags in (("evil-all", ["-P"]), ("evil-eph", ["-p", "80"])):
            p.docker("run", "-d", "--name", name, *flags, EVIL_IMAGE)
            inspected = _inspect(p, name)
            labels = inspected["Config"]["Labels"]  # type: ignore[index]
            # the proxy's stamp, not the image's: the container's label won the merge
            expected = {} if flags == ["-P"] else {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
            assert json.loads(labels[HOST_PORT_BINDINGS_LABEL]) == expected
            assert _forward_ips(inspected) == {"127.0.0.1"}
        # a create that bypasses the proxy inherits the image's label; still loopback only
        p.daemon.docker("run", "-d", "--name", "evil-direct", "-P", EVIL_IMAGE)
        inspected = _inspect(p, "evil-direct")
        assert inspected["Config"]["Labels"][HOST_PORT_BINDINGS_LABEL] == EVIL_LABEL  # type: ignore[index]
        c = container_forwards(inspected)
        assert {f.host_ip for f in c.forwards} == {"127.0.0.1"}
        assert any("does not match" in w for w in c.warnings)
        # the user's own 0.0.0.0 through the proxy is still honoured
        p.docker("run", "-d", "--name", "evil-asked", "-p", "0.0.0.0::80", EVIL_IMAGE)
        assert _forward_ips(_inspect(p, "evil-asked")) == {"0.0.0.0"}
    finally:
        p.daemon.remove_containers()
        p.docker("rmi", "-f", EVIL_IMAGE, check=False)
