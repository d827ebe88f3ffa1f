"""``pydesk run`` flags -> the /containers/create body; ``open``'s URL; the pull stream."""

from __future__ import annotations

from typing import Any

import pytest

from pydesk.cli.images import PullError, follow_pull, split_reference
from pydesk.cli.ports import open_url
from pydesk.cli.runflags import RunOptions, create_body, parse_publish
from pydesk.cli.streams import Demuxer


def test_minimal_detached() -> None:
    body = create_body(RunOptions("busybox", detach=True))
    assert body == {"Image": "busybox", "Tty": False, "OpenStdin": False, "StdinOnce": False,
                    "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
                    "HostConfig": {}}


def test_every_flag() -> None:
    body = create_body(RunOptions(
        "busybox", ("sh", "-c", "true"), env=("A=1", "HOME", "UNSET"), publish=(
            "8080:80", "127.0.0.1:5353:53/udp", "9000"), volumes=(
            "./site:/www:ro", "data:/data", "/anon"), workdir="/w", user="1000:1000",
        entrypoint="/bin/sh -x", network="net1", restart="on-failure:3", remove=True,
        interactive=True, tty=True, environ={"HOME": "/root"}, cwd="/home/u/proj"))
    assert body["Cmd"] == ["sh", "-c", "true"]
    assert body["Env"] == ["A=1", "HOME=/root"]
    assert body["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}}
    host = body["HostConfig"]
    assert host["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
        "9000/tcp": [{"HostIp": "", "HostPort": ""}]}
    assert host["Binds"] == ["/home/u/proj/site:/www:ro", "data:/data"]
    assert body["Volumes"] == {"/anon": {}}
    assert (body["WorkingDir"], body["User"], body["Entrypoint"]) == (
        "/w", "1000:1000", ["/bin/sh", "-x"])
    assert host["NetworkMode"] == "net1"
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["AutoRemove"] is True
    assert body["Tty"] and body["OpenStdin"] and body["StdinOnce"] and body["AttachStdin"]


def test_ipv6_publish() -> None:
    assert parse_publish("[::1]:8080:80") == ("80/tcp", {"HostIp": "::1", "HostPort": "8080"})


@pytest.mark.parametrize("bad", ["a:b", "1:2:3:4", "8080:"])
def test_bad_publish(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid publish"):
        create_body(RunOptions("busybox", publish=(bad,)))


def test_bad_restart() -> None:
    with pytest.raises(ValueError, match="invalid restart"):
        create_body(RunOptions("busybox", restart="sometimes"))


def test_empty_entrypoint_resets_it() -> None:
    assert create_body(RunOptions("busybox", entrypoint=""))["Entrypoint"] == [""]


def test_demuxer_splits_frames_across_reads() -> None:
    d = Demuxer()
    data = b"\x01\0\0\0\0\0\0\x03out" + b"\x02\0\0\0\0\0\0\x03err"
    assert d.feed(data[:5]) == []
    assert d.feed(data[5:10]) == []
    assert d.feed(data[10:13]) == [(1, b"out")]
    assert d.feed(data[13:]) == [(2, b"err")]


def test_open_url() -> None:
    bindings: dict[str, Any] = {
        "8443/tcp": [{"HostIp": "127.0.0.2", "HostPort": "443"}],
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "53/udp": None}
    assert open_url(bindings, None) == "http://localhost:8080"
    assert open_url(bindings, "8443") == "http://127.0.0.2:443"
    assert open_url(bindings, "53/udp") is None


def test_split_reference() -> None:
    assert split_reference("busybox") == ("busybox", "latest")
    assert split_reference("reg:5000/a/b:1.0") == ("reg:5000/a/b", "1.0")
    assert split_reference("reg:5000/a") == ("reg:5000/a", "latest")
    assert split_reference("a@sha256:ab") == ("a", "sha256:ab")


class FakeProgress:
    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}

    def add_task(self, description: str, total: float | None = None) -> int:
        self.tasks[len(self.tasks)] = {"description": description, "total": total}
        return len(self.tasks) - 1

    def update(self, task: int, **fields: Any) -> None:
        self.tasks[task].update(fields)


def test_pull_stream_drives_one_bar_per_layer() -> None:
    events: list[dict[str, Any]] = [{"status": "Pulling from library/busybox", "id": "latest"},
              {"status": "Downloading", "id": "abc", "progressDetail": {"current": 5,
                                                                        "total": 10}},
              {"status": "Pull complete", "id": "abc"},
              {"status": "Already exists", "id": "def"},
              {"status": "Digest: sha256:00"}, {"status": "Status: Downloaded newer image"}]
    progress = FakeProgress()
    assert follow_pull(events, progress) == ["Digest: sha256:00",
                                             "Status: Downloaded newer image"]
    assert len(progress.tasks) == 2
    assert progress.tasks[0]["description"] == "abc: Pull complete"
    assert progress.tasks[1]["completed"] == 1


def test_pull_error() -> None:
    with pytest.raises(PullError, match="manifest unknown"):
        follow_pull([{"error": "manifest unknown", "errorDetail": {}}], None)


def test_a_finished_layer_keeps_its_size_and_plain_lines_follow_status_changes() -> None:
    events: list[dict[str, Any]] = [
        {"status": "Pulling from library/busybox", "id": "latest"},
        {"status": "Pulling fs layer", "id": "abc"},
        {"status": "Downloading", "id": "abc", "progressDetail": {"current": 5, "total": 10}},
        {"status": "Downloading", "id": "abc", "progressDetail": {"current": 9, "total": 10}},
        {"status": "Pull complete", "id": "abc"}, {"status": "Status: Downloaded"}]
    progress = FakeProgress()
    follow_pull(events, progress)
    assert (progress.tasks[0]["total"], progress.tasks[0]["completed"]) == (10, 10)
    lines: list[str] = []
    assert follow_pull(events, None, lines.append) == ["Status: Downloaded"]
    assert lines == ["abc: Pulling fs layer", "abc: Downloading", "abc: Pull complete"]
