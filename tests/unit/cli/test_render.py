"""Rendering as the docker CLI does: tables, ages, sizes, ports, templates."""

from __future__ import annotations

from typing import Any

import pytest

from pydesk.cli import render


def test_table_pads_three_spaces_and_strips_the_end() -> None:
    text = render.table(("A", "LONGER"), [["xyz", "1"], ["", ""]])
    assert text.split("\n") == ["A     LONGER", "xyz   1", ""]


@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"), (3600, "About an hour"),
    (7200, "2 hours"), (47 * 3600, "47 hours"), (3 * 86400, "3 days"),
    (15 * 86400, "2 weeks"), (70 * 86400, "2 months"), (800 * 86400, "2 years"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert render.human_duration(seconds) == text


def test_ago_never_negative() -> None:
    assert render.ago(110, 100) == "Less than a second ago"


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (999, "999B"), (1240, "1.24kB"), (4_261_000, "4.26MB"), (1_000_000_000, "1GB")])
def test_human_size(size: int, text: str) -> None:
    assert render.human_size(size) == text


def test_ports_cell() -> None:
    ports = [{"PrivatePort": 80, "Type": "tcp", "PublicPort": 8080, "IP": "0.0.0.0"},
             {"PrivatePort": 80, "Type": "tcp", "PublicPort": 8080, "IP": "::"},
             {"PrivatePort": 53, "Type": "udp"}]
    assert render.ports(ports) == "53/udp, 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"


def test_port_lines() -> None:
    bindings = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "81/tcp": None,
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]}
    assert render.port_lines(bindings) == ["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:8080"]
    assert render.port_lines(bindings, "80") == ["0.0.0.0:8080"]
    assert render.port_lines(bindings, "81/tcp") == []


def test_ps_rows() -> None:
    c = {"Id": "a" * 64, "Image": "busybox", "Command": "sh -c 'while true; do sleep 1; done'",
         "Created": 40, "Status": "Up 5 seconds", "Names": ["/web"],
         "Ports": [{"PrivatePort": 80, "Type": "tcp", "PublicPort": 8080, "IP": "0.0.0.0"}]}
    assert render.ps_rows([c], now=100) == [[
        "a" * 12, "busybox", '"sh -c \'while true; …"', "About a minute ago", "Up 5 seconds",
        "0.0.0.0:8080->80/tcp", "web"]]


def test_image_rows() -> None:
    images: list[dict[str, Any]] = [
        {"Id": "sha256:" + "b" * 64, "RepoTags": ["busybox:latest", "reg:5000/x"],
         "Created": 0, "Size": 4_261_000},
        {"Id": "sha256:" + "c" * 64, "RepoTags": None, "Created": 0, "Size": 10}]
    rows = render.image_rows(images, now=30)
    assert rows[0] == ["busybox", "latest", "b" * 12, "30 seconds ago", "4.26MB"]
    assert rows[1][:2] == ["reg:5000/x", "<none>"]
    assert rows[2][:2] == ["<none>", "<none>"]


def test_template() -> None:
    obj = {"State": {"Status": "running", "Running": True, "Pid": 7}, "Name": "/web",
           "Config": {"Env": ["A=1"], "Labels": {}}}
    assert render.format_template("{{.State.Status}}", obj) == "running"
    assert render.format_template("{{ .State.Running }} {{.State.Pid}}", obj) == "true 7"
    assert render.format_template("{{json .Config.Env}}", obj) == '["A=1"]'
    assert render.format_template("{{.Config.Labels}}", obj) == "map[]"
    assert render.format_template("{{.Config.Env}}", obj) == "[A=1]"
    with pytest.raises(KeyError):
        render.format_template("{{.State.Nope}}", obj)
