"""The docker flags beyond the daily ones: run's --mount, resources, network, env files,
labels; logs' --since; listings' --format (table and raw)."""

from __future__ import annotations

import pytest

from pydesk.cli import render
from pydesk.cli.runflags import (
    RunOptions,
    create_body,
    parse_bytes,
    parse_mount,
    parse_timestamp,
)


def test_mounts_of_every_type() -> None:
    assert parse_mount("type=bind,source=./site,target=/www,readonly", "/home/u") == {
        "Type": "bind", "Source": "/home/u/site", "Target": "/www", "ReadOnly": True}
    assert parse_mount("type=volume,src=data,dst=/data,volume-nocopy,volume-opt=o=1,"
                       "volume-opt=type=tmpfs", "/") == {
        "Type": "volume", "Source": "data", "Target": "/data",
        "VolumeOptions": {"NoCopy": True, "DriverConfig": {"Options": {"o": "1",
                                                                       "type": "tmpfs"}}}}
    assert parse_mount("target=/anon", "/") == {"Type": "volume", "Target": "/anon"}
    assert parse_mount("type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1770", "/") == {
        "Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 64 << 20,
                                                          "Mode": 0o1770}}
    assert parse_mount('type=bind,"source=/a,b",target=/x,ro=false', "/")["Source"] == "/a,b"


@pytest.mark.parametrize(("spec", "message"), [
    ("type=nfs,target=/x", "invalid mount type"), ("type=bind,target=/x", "source is required"),
    ("type=volume,source=v", "target is required"), ("target=/x,colour=red", "unknown field"),
    ("target=/x,readonly=maybe", "invalid value for readonly"),
])
def test_bad_mounts(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_mount(spec, "/")


def test_sizes() -> None:
    assert parse_bytes("1024") == 1024
    assert parse_bytes("512m") == 512 << 20
    assert parse_bytes("1.5g") == 3 << 29
    assert parse_bytes("2GiB") == 2 << 30
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_every_new_run_flag() -> None:
    body = create_body(RunOptions(
        "busybox", publish=("8080:80",), expose=("9000", "53/udp"), publish_all=True,
        labels=("a=1", "b"), hostname="web", env=("B=2",),
        env_file_lines=("# comment\n", "\n", "A=1 # not a comment\n", "HOME\n"),
        environ={"HOME": "/root"}, add_hosts=("db:10.0.0.2", "cache=10.0.0.3"),
        dns=("1.1.1.1",), network="appnet", network_aliases=("api",), init=True,
        privileged=True, cap_add=("NET_ADMIN",), cap_drop=("ALL",), memory="256m",
        cpus="1.5", read_only=True, tmpfs=("/run:size=1m", "/tmp"), stop_signal="SIGINT",
        mounts=("type=volume,source=data,target=/data",)))
    host = body["HostConfig"]
    assert body["ExposedPorts"] == {"9000/tcp": {}, "53/udp": {}, "80/tcp": {}}
    assert host["PublishAllPorts"] is True
    assert body["Labels"] == {"a": "1", "b": ""}
    assert body["Hostname"] == "web" and body["StopSignal"] == "SIGINT"
    assert body["Env"] == ["A=1 # not a comment", "HOME=/root", "B=2"]  # -e after the file
    assert host["ExtraHosts"] == ["db:10.0.0.2", "cache:10.0.0.3"]
    assert host["Dns"] == ["1.1.1.1"]
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"appnet": {"Aliases": ["api"]}}}
    assert (host["Init"], host["Privileged"], host["ReadonlyRootfs"]) == (True, True, True)
    assert (host["CapAdd"], host["CapDrop"]) == (["NET_ADMIN"], ["ALL"])
    assert (host["Memory"], host["NanoCpus"]) == (256 << 20, 1_500_000_000)
    assert host["Tmpfs"] == {"/run": "size=1m", "/tmp": ""}
    assert host["Mounts"] == [{"Type": "volume", "Source": "data", "Target": "/data"}]


@pytest.mark.parametrize(("options", "message"), [
    (RunOptions("b", network_aliases=("a",)), "user-defined networks"),
    (RunOptions("b", cpus="many"), "--cpus"), (RunOptions("b", expose=("http",)), "--expose"),
])
def test_bad_run_flags(options: RunOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_body(options)


def test_since_until() -> None:
    now = 1_700_000_000.0
    assert parse_timestamp("42m", now) == str(int(now - 42 * 60))
    assert parse_timestamp("1h30m", now) == str(int(now - 5400))
    assert parse_timestamp("1500ms", now) == "1699999998.5"
    assert parse_timestamp("1699999000", now) == "1699999000"
    assert parse_timestamp("2023-11-14T22:13:20Z", now) == "1700000000"
    assert parse_timestamp("2023-11-14T22:13:20.5+00:00", now) == "1700000000.5"
    with pytest.raises(ValueError, match="neither"):
        parse_timestamp("yesterday", now)


CONTAINER = {"Id": "a" * 64, "Image": "busybox", "Command": "httpd -f -p 80 -h /www",
             "Created": 1_700_000_000, "State": "running", "Status": "Up 5 minutes",
             "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "Type": "tcp",
                        "IP": "127.0.0.1"}],
             "Names": ["/web"], "Labels": {"b": "2", "a": "1"},
             "Mounts": [{"Name": "data"}, {"Source": "/src"}],
             "NetworkSettings": {"Networks": {"bridge": {}, "appnet": {}}}}


def test_ps_fields_and_a_table_template() -> None:
    fields = render.ps_fields(CONTAINER, 1_700_000_300)
    assert fields["ID"] == "a" * 12 and fields["Command"] == '"httpd -f -p 80 -h /…"'
    assert fields["RunningFor"] == "5 minutes ago"
    assert fields["CreatedAt"] == "2023-11-14 22:13:20 +0000 UTC"
    assert (fields["Labels"], fields["Mounts"], fields["Networks"]) == (
        "a=1,b=2", "data,/src", "appnet,bridge")
    assert render.ps_fields(CONTAINER, 0, no_trunc=True)["ID"] == "a" * 64
    lines = render.format_lines("table {{.Names}}\\t{{.Ports}}\\t{{.State}}", [fields, {
        **fields, "Names": "a-much-longer-name"}], render.PS_FIELDS)
    assert lines == ["NAMES                PORTS                    STATE",
                     "web                  127.0.0.1:8080->80/tcp   running",
                     "a-much-longer-name   127.0.0.1:8080->80/tcp   running"]
    assert render.format_lines("{{.Names}}: {{json .Labels}}", [fields], render.PS_FIELDS) == [
        'web: "a=1,b=2"']
    with pytest.raises(KeyError):
        render.format_lines("{{.Nope}}", [fields], render.PS_FIELDS)
    assert render.format_lines("table", [], render.VOLUME_FIELDS) == [
        "DRIVER   VOLUME NAME   MOUNTPOINT   SCOPE   LABELS"]


def test_image_fields_one_row_per_tag_with_its_digest() -> None:
    image = {"Id": "sha256:" + "b" * 64, "RepoTags": ["busybox:latest", "reg:5000/bb:1"],
             "RepoDigests": ["busybox@sha256:cc"], "Created": 1_700_000_000, "Size": 4_261_550}
    rows = render.image_fields([image], 1_700_000_000 + 86400 * 3)
    assert [(r["Repository"], r["Tag"], r["Digest"]) for r in rows] == [
        ("busybox", "latest", "sha256:cc"), ("reg:5000/bb", "1", "<none>")]
    assert rows[0]["ID"] == "b" * 12 and rows[0]["Size"] == "4.26MB"
    assert rows[0]["CreatedSince"] == "3 days ago"
