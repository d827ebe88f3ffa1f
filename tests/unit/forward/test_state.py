"""forwards.json: round trip, a missing or broken file."""

from __future__ import annotations

import json
from pathlib import Path

from pydesk.forward.desired import Forward, Proto
from pydesk.forward.state import FailedForward, ForwardState, load_state, save_state


def test_round_trip(tmp_path: Path) -> None:
    web = Forward(Proto.TCP, "127.0.0.1", 8080, 8080, "web", "80/tcp")
    dns = Forward(Proto.UDP, "0.0.0.0", 5353, 5353, "dns", "53/udp")
    state = ForwardState(made=frozenset({web}),
                         failed=(FailedForward(dns, "host port 5353 is already in use", "hint"),),
                         warnings=("w",), wanted=frozenset({web, dns}))
    path = tmp_path / "forwards.json"
    save_state(path, state)
    loaded = load_state(path)
    assert loaded == state
    assert next(iter(loaded.made)).container == "web"
    assert loaded.failed[0].forward.container_port == "53/udp"
    assert json.loads(path.read_text())["version"] == 1
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["forwards.json"]  # no temporary left


def test_missing_or_broken_file_is_an_empty_state(tmp_path: Path) -> None:
    path = tmp_path / "forwards.json"
    assert load_state(path) == ForwardState()
    path.write_text("{broken")
    assert load_state(path) == ForwardState()
    path.write_text(json.dumps({"version": 99}))
    assert load_state(path) == ForwardState()


def test_the_forwards_list_the_cli_reads(tmp_path: Path) -> None:
    from pydesk.cli.doctor_checks import forward_checks, read_forwards
    from pydesk.cli.ports import forward_failures

    web = Forward(Proto.TCP, "127.0.0.1", 8080, 8080, "web", "80/tcp")
    api = Forward(Proto.TCP, "0.0.0.0", 9090, 9090, "api", "90/tcp")
    state = ForwardState(made=frozenset({web}),
                         failed=(FailedForward(api, "host port 9090 is already in use"),),
                         wanted=frozenset({web, api}))
    path = tmp_path / "forwards.json"
    save_state(path, state)
    entries = read_forwards(path)
    assert entries is not None
    assert [(e["host_port"], e["container"], e["error"]) for e in entries] == [
        (8080, "web", ""), (9090, "api", "host port 9090 is already in use")]
    checks = forward_checks(entries)
    assert checks[0].detail == "1 of 2 forwarded"
    assert forward_failures(entries, "0123abcd", "api") == [
        "warning: host port 9090/tcp is not forwarded: host port 9090 is already in use"]
