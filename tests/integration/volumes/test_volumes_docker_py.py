"""docker-py's volume API (``client.volumes``) and raw API details against a real pydeskd."""

from __future__ import annotations

import docker  # type: ignore[import-untyped]
import pytest

from tests.integration.volumes.conftest import IMAGE
from tests.support.pydeskd import Pydeskd


def test_docker_py_volumes(d: Pydeskd) -> None:
    client = d.client()
    vol = client.volumes.create(name="pyvol", driver="local", labels={"k": "v"})
    assert vol.name == "pyvol" and vol.attrs["Labels"] == {"k": "v"}
    assert [v.name for v in client.volumes.list()] == ["pyvol"]
    assert [v.name for v in client.volumes.list(filters={"label": "k=v"})] == ["pyvol"]
    assert client.volumes.list(filters={"label": "k=other"}) == []
    got = client.volumes.get("pyvol")
    assert got.attrs["Mountpoint"].endswith("/volumes/pyvol/_data")
    with pytest.raises(docker.errors.NotFound, match="no such volume"):
        client.volumes.get("nosuch")
    with pytest.raises(docker.errors.APIError) as bad:
        client.volumes.create(name="bad name")
    assert bad.value.status_code == 400
    # in use by a container: 409, then removable once the container is gone
    out = client.containers.run(IMAGE, ["sh", "-c", "echo hi > /d/f; cat /d/f"],
                                volumes={"pyvol": {"bind": "/d", "mode": "rw"}},
                                name="pyc", remove=False)
    assert out == b"hi\n"
    with pytest.raises(docker.errors.APIError) as busy:
        got.remove()
    assert busy.value.status_code == 409 and "volume is in use" in str(busy.value)
    client.containers.get("pyc").remove(v=True)
    got.remove()
    assert client.volumes.list() == []
    # anonymous volumes only by default, named ones with all=true
    client.volumes.create(name="named")
    anon = client.api.create_volume()  # no name: an anonymous volume
    assert len(anon["Name"]) == 64
    assert anon["Labels"] == {"com.docker.volume.anonymous": ""}
    report = client.volumes.prune()
    assert report["VolumesDeleted"] == [anon["Name"]]
    report = client.volumes.prune(filters={"all": "true"})
    assert report["VolumesDeleted"] == ["named"]
    assert report["SpaceReclaimed"] >= 0


def test_raw_api_shapes(d: Pydeskd) -> None:
    api = d.client().api
    assert api.volumes() == {"Volumes": [], "Warnings": []}
    api.create_volume("tmpv", driver_opts={"type": "tmpfs", "device": "tmpfs",
                                           "o": "size=1m"})
    out = d.docker("run", "--rm", "-v", "tmpv:/t", IMAGE, "sh", "-c",
                   "grep ' /t ' /proc/mounts; echo x > /t/x")
    assert b" /t tmpfs " in out.stdout
    # a tmpfs volume's content lives only while a container uses it, as Docker's local driver
    out = d.docker("run", "--rm", "-v", "tmpv:/t", IMAGE, "ls", "-A", "/t")
    assert out.stdout == b""
    sized = api.inspect_volume("tmpv")
    assert sized["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    usage = api.get(api._url("/volumes/tmpv"), params={"size": "1"}).json()["UsageData"]
    assert usage["RefCount"] == 0 and usage["Size"] >= 0
    df = api.df()
    assert [v["Name"] for v in df["Volumes"]] == ["tmpv"]
    assert df["BuildCache"] == [] and df["LayersSize"] > 0
    only = api.get(api._url("/system/df"), params={"type": "volume"}).json()
    assert only["Images"] is None and len(only["Volumes"]) == 1
    api.remove_volume("tmpv")
    with pytest.raises(docker.errors.APIError) as bad:
        api.volumes(filters={"dangling": "maybe"})
    assert bad.value.status_code == 400 and "dangling=maybe" in str(bad.value)
