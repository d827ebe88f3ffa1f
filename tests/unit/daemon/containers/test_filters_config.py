"""ps filters, image-config merging, /etc files, mounts and the fallback spec's parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.daemon.containers.files import hosts_file, resolv_conf
from pydeskd.daemon.containers.filters import ListOptions, select
from pydeskd.daemon.containers.mounts import LocalVolumes, resolve
from pydeskd.daemon.containers.record import Container


def c(n: int, name: str, *, running: bool = False, exit_code: int | None = None,
      labels: dict[str, str] | None = None, image: str = "sha256:aa") -> Container:
    rec = Container(id=f"{n:02d}" + "f" * 62, name="/" + name,
                    created=f"2026-01-01T00:00:{n:02d}Z", path="sh", args=[],
                    config={"Labels": labels or {}}, host_config={}, image=image,
                    image_name="busybox")
    if running or exit_code is not None:
        rec.has_been_started = True
        rec.state.set_running(100 + n)
        if exit_code is not None:
            rec.state.set_stopped(exit_code)
    return rec


ALL = [c(1, "web", running=True, labels={"tier": "front", "env": "prod"}),
       c(2, "db", exit_code=0, labels={"tier": "back"}),
       c(3, "job", exit_code=3, image="sha256:bb"),
       c(4, "fresh")]


def names(opts: ListOptions) -> list[str]:
    by_name = {x.name[1:]: x for x in ALL}

    def lookup(ref: str) -> Container:
        if ref not in by_name:
            raise NotFound(f"No such container: {ref}")
        return by_name[ref]

    def ancestors(ref: str) -> set[str]:
        return {"sha256:bb"} if ref == "other" else set()

    return [x.name[1:] for x in select(ALL, opts, lookup, ancestors)]


def test_default_lists_running_only_newest_first() -> None:
    assert names(ListOptions()) == ["web"]
    assert names(ListOptions(all=True)) == ["fresh", "job", "db", "web"]
    assert names(ListOptions(limit=2)) == ["fresh", "job"]


@pytest.mark.parametrize(("filters", "expected"), [
    ({"status": ["exited"]}, ["job", "db"]),
    ({"status": ["created", "running"]}, ["fresh", "web"]),
    ({"label": ["tier"]}, ["db", "web"]),
    ({"label": ["tier=front", "env=prod"]}, ["web"]),
    ({"label": ["tier=front", "env=dev"]}, []),
    ({"name": ["^w"]}, ["web"]),
    ({"name": ["o"]}, ["job"]),
    ({"id": ["03"]}, ["job"]),
    ({"exited": ["3"]}, ["job"]),
    ({"exited": ["0", "3"]}, ["job", "db"]),
    ({"ancestor": ["other"]}, ["job"]),
    ({"before": ["job"]}, ["db", "web"]),
    ({"since": ["db"]}, ["fresh", "job"]),
])
def test_filters(filters: dict[str, list[str]], expected: list[str]) -> None:
    assert names(ListOptions(all=True, filters=filters)) == expected


def test_status_filter_lists_stopped_without_all() -> None:
    assert names(ListOptions(filters={"status": ["exited"]})) == ["job", "db"]


def test_bad_filters() -> None:
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        names(ListOptions(filters={"colour": ["red"]}))
    with pytest.raises(InvalidArgument, match="status=sleeping"):
        names(ListOptions(filters={"status": ["sleeping"]}))
    with pytest.raises(NotFound):
        names(ListOptions(filters={"before": ["ghost"]}))


def test_resolv_conf_drops_loopback_servers() -> None:
    host = "# c\nnameserver 127.0.0.53\nnameserver ::1\nsearch lan\noptions edns0\n"
    assert resolv_conf(host) == ("nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\n"
                                 "options edns0\n")
    assert resolv_conf("nameserver 10.0.0.2\n") == "nameserver 10.0.0.2\n"
    assert resolv_conf(host, dns=["1.1.1.1"], search=["x.y"]) == \
        "nameserver 1.1.1.1\nsearch x.y\noptions edns0\n"


def test_hosts_file() -> None:
    text = hosts_file("abc", ["db:10.0.0.5", "v6=::1"])
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert "10.0.0.5\tdb\n" in text and "::1\tv6\n" in text


def test_mounts(tmp_path: Path) -> None:
    volumes = LocalVolumes(tmp_path / "volumes")
    host_dir = tmp_path / "made-by-v"
    plan = resolve({"Volumes": {"/anon": {}, "/data": {}}},
                   {"Binds": [f"{host_dir}:/src:ro", "named:/data"],
                    "Tmpfs": {"/run": "size=1m"},
                    "Mounts": [{"Type": "tmpfs", "Target": "/t2",
                                "TmpfsOptions": {"SizeBytes": 1024}}]},
                   volumes, new_name=lambda: "a" * 64)
    assert host_dir.is_dir()  # -v creates a missing source
    by_dest = {m.destination: m for m in plan.mounts}
    assert by_dest["/src"].oci()["options"] == ["rbind", "rprivate", "ro"]
    assert by_dest["/data"].source == str(tmp_path / "volumes" / "named" / "_data")
    assert by_dest["/data"].inspect()["Name"] == "named"
    assert by_dest["/anon"].anonymous and by_dest["/anon"].name == "a" * 64
    assert "size=1m" in by_dest["/run"].oci()["options"]
    assert "size=1024" in by_dest["/t2"].oci()["options"]
    with pytest.raises(InvalidArgument, match="bind source path does not exist"):
        resolve({}, {"Mounts": [{"Type": "bind", "Source": str(tmp_path / "nope"),
                                 "Target": "/x"}]}, volumes)
    with pytest.raises(InvalidArgument, match="Duplicate mount point: /x"):
        resolve({}, {"Binds": ["v1:/x", "v2:/x"]}, volumes)


def test_exec_process_from_the_container_process(tmp_path: Path) -> None:
    from pydeskd.daemon.containers.spec import exec_process, replace_or_append_env

    assert replace_or_append_env(["A=1", "B=2"], ["B=3", "C=4"]) == ["A=1", "B=3", "C=4"]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("nobody:x:65534:65534::/:/bin/false\n")
    template = {"args": ["sleep"], "env": ["PATH=/bin", "X=c"], "cwd": "/", "terminal": False,
                "user": {"uid": 0, "gid": 0}, "consoleSize": {"height": 1, "width": 1},
                "capabilities": {"bounding": ["CAP_KILL"]}}
    proc = exec_process(template, tmp_path, ["sh"], env=["X=e"], user="nobody", cwd="/tmp/",
                        tty=True)
    assert proc["args"] == ["sh"] and proc["env"] == ["PATH=/bin", "X=e", "TERM=xterm"]
    assert proc["user"]["uid"] == 65534 and proc["user"]["gid"] == 65534
    assert proc["cwd"] == "/tmp"
    assert proc["terminal"] and "consoleSize" not in proc
    assert proc["capabilities"] == {"bounding": ["CAP_KILL"]}
    assert "CAP_SYS_ADMIN" in exec_process(template, tmp_path, ["sh"], privileged=True)[
        "capabilities"]["effective"]
    assert template["env"] == ["PATH=/bin", "X=c"]  # the template is not changed
