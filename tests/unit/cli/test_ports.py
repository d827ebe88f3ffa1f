"""``pydesk open``/``port``'s pure parts: URLs (IPv6 too), why there is no URL, and the port
forwarder's failures for one container."""

from __future__ import annotations

import pytest

from pydesk.cli.ports import forward_failures, open_url, port_key, unpublished_message


def test_port_key() -> None:
    assert port_key("80") == "80/tcp" and port_key("53/udp") == "53/udp"


def test_open_url_picks_the_lowest_tcp_port_and_brackets_ipv6() -> None:
    bindings = {"8443/tcp": [{"HostIp": "::1", "HostPort": "9443"}],
                "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8443"}],
                "53/udp": [{"HostIp": "", "HostPort": "5353"}]}
    assert open_url(bindings, None) == "http://localhost:8443"
    assert open_url(bindings, "8443") == "http://[::1]:9443"
    assert open_url(bindings, "53/udp") == "http://localhost:5353"
    assert open_url(bindings, "80") is None
    assert open_url({"80/tcp": None}, None) is None


def test_unpublished_messages_say_what_to_do() -> None:
    exposed = {"80/tcp": None}
    message = unpublished_message("web", exposed, None)
    assert message.startswith("Error: web has no published port")
    assert "-p HOSTPORT:80" in message
    assert "-p HOSTPORT:80" in unpublished_message("web", exposed, "80")
    published = {"443/tcp": [{"HostIp": "", "HostPort": "8443"}]}
    message = unpublished_message("web", published, "80")
    assert message.startswith("Error: No public port '80/tcp' published for web")
    assert "443/tcp" in message
    assert "only 53/udp" in unpublished_message("dns", {"53/udp": [{"HostPort": "1"}]}, None)
    assert unpublished_message("x", {}, None).endswith("-p HOSTPORT:CONTAINERPORT")


def test_forward_failures_match_the_container_by_name_or_id() -> None:
    entries = [{"proto": "tcp", "host_port": 8080, "container": "web", "error": "in use"},
               {"proto": "udp", "host_port": 53, "container": "abc123", "error": "denied"},
               {"proto": "tcp", "host_port": 9000, "container": "web", "error": ""},
               {"proto": "tcp", "host_port": 7000, "container": "other", "error": "in use"}]
    assert forward_failures(entries, "abc123def", "web") == [
        "warning: host port 8080/tcp is not forwarded: in use",
        "warning: host port 53/udp is not forwarded: denied"]
    assert forward_failures(None, "abc", "web") == []


def test_run_d_reports_a_taken_port_once_the_forwarder_handled_the_container(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pydesk.cli import ports

    states: list[list[dict[str, object]] | None] = [
        [],  # the forwarder has not seen the container yet
        [{"container": "web", "host_port": 8080, "proto": "tcp",
          "error": "host port 8080 is already in use"},
         {"container": "web", "host_port": 8443, "proto": "tcp", "error": ""}],
    ]
    monkeypatch.setattr(ports, "_vm_forwards", lambda: states.pop(0) if len(states) > 1
                        else states[0])
    ports.report_forwards_after_start("abc123", "web", timeout=5)
    err = capsys.readouterr().err
    assert err == ("warning: host port 8080/tcp is not forwarded: host port 8080 is already "
                   "in use\n")


def test_run_d_in_passthrough_reads_nothing(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pydesk.cli import ports

    monkeypatch.setattr(ports, "_vm_forwards", lambda: None)
    ports.report_forwards_after_start("abc123", "web", timeout=5)
    assert capsys.readouterr().err == ""
