"""Engine selection (pydesk.endpoint) with a fake ping: flag, env, config, mode, no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydesk.endpoint import (
    NATIVE_SOCKET,
    Candidate,
    Engine,
    NoEngineError,
    Selection,
    config_path,
    explain_engine,
    read_config,
    select_engine,
    vm_socket,
)

HOME = Path("/home/u")


def choose(answering: set[Path], **kw: object) -> Engine:
    args: dict[str, object] = {"host": None, "mode": None, "env": {}, "config": {},
                               "home": HOME, "platform": "linux"}
    args.update(kw)
    return select_engine(ping=lambda p: p in answering, **args)  # type: ignore[arg-type]


def test_flag_wins_over_everything_and_a_bare_path_is_a_unix_socket() -> None:
    engine = choose(set(), host="/tmp/x.sock", env={"PYDESK_HOST": "unix:///other"})
    assert engine == Engine("unix:///tmp/x.sock", "flag")
    assert choose(set(), host="tcp://1.2.3.4:2375").base_url == "tcp://1.2.3.4:2375"


def test_env_comes_next() -> None:
    assert choose(set(), env={"PYDESK_HOST": "unix:///e.sock"}) == Engine("unix:///e.sock", "env")


def test_auto_on_linux_prefers_native_then_vm() -> None:
    vm = vm_socket(HOME, {})
    assert choose({NATIVE_SOCKET, vm}).source == "native"
    assert choose({vm}) == Engine(f"unix://{vm}", "vm")


def test_auto_elsewhere_never_tries_native() -> None:
    assert choose({NATIVE_SOCKET, vm_socket(HOME, {})}, platform="darwin").source == "vm"
    with pytest.raises(NoEngineError):
        choose({NATIVE_SOCKET}, platform="darwin")


def test_mode_from_flag_beats_config() -> None:
    both = {NATIVE_SOCKET, vm_socket(HOME, {})}
    assert choose(both, config={"mode": "vm"}).source == "vm"
    assert choose(both, config={"mode": "vm"}, mode="native").source == "native"
    with pytest.raises(NoEngineError, match="does not answer"):
        choose({vm_socket(HOME, {})}, mode="native")


def test_no_engine_names_both_sockets_and_says_how_to_start_one() -> None:
    with pytest.raises(NoEngineError) as e:
        choose(set())
    assert str(NATIVE_SOCKET) in e.value.message and str(vm_socket(HOME, {})) in e.value.message
    assert "sudo pydesk engine start" in e.value.hint and "pydesk vm start" in e.value.hint


def test_bad_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        choose(set(), mode="fast")


def test_read_config(tmp_path: Path) -> None:
    assert read_config(tmp_path / "absent.json") == {}
    (tmp_path / "c.json").write_text('{"mode": "vm"}')
    assert read_config(tmp_path / "c.json") == {"mode": "vm"}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_config(tmp_path / "bad.json")


def test_pydesk_home_moves_the_vm_socket() -> None:
    moved = Path("/tmp/ph/run/docker.sock")
    assert vm_socket(HOME, {"PYDESK_HOME": "/tmp/ph"}) == moved
    assert vm_socket(HOME, {}) == HOME / ".pydesk" / "run" / "docker.sock"
    assert choose({moved}, env={"PYDESK_HOME": "/tmp/ph"}) == Engine(f"unix://{moved}", "vm")


def explain(answering: set[Path], **kw: object) -> Selection:
    args: dict[str, object] = {"host": None, "mode": None, "env": {}, "config": {},
                               "home": HOME, "platform": "linux"}
    args.update(kw)
    return explain_engine(ping=lambda p: p in answering, **args)  # type: ignore[arg-type]


def test_explain_says_where_the_mode_came_from_and_what_answered() -> None:
    vm = vm_socket(HOME, {})
    chosen = explain({NATIVE_SOCKET, vm})
    assert chosen.candidates == (Candidate("native", NATIVE_SOCKET, True),
                                 Candidate("vm", vm, None))
    assert chosen.reason() == (f"mode auto (from the default): native {NATIVE_SOCKET} answers; "
                               f"vm {vm} not tried")
    assert "from ~/.pydesk/config.json" in explain({vm}, config={"mode": "vm"}).reason()
    assert "from --mode" in explain({vm}, mode="vm").reason()
    assert explain(set(), host="/x.sock").reason() == "chosen by --host/-H"
    assert explain(set(), env={"PYDESK_HOST": "/x"}).reason() == "chosen by $PYDESK_HOST"
    nothing = explain(set())
    assert nothing.engine is None and "does not answer" in nothing.reason()


def test_the_hint_fits_the_mode_and_platform() -> None:
    with pytest.raises(NoEngineError) as e:
        choose(set(), platform="darwin")
    assert e.value.hint == "start the VM: `pydesk vm start`"
    with pytest.raises(NoEngineError) as e:
        choose(set(), mode="native")
    assert e.value.hint == "start the native engine: `sudo pydesk engine start`"


def test_pydesk_home_moves_the_configuration_too() -> None:
    assert config_path(HOME, {}) == HOME / ".pydesk" / "config.json"
    assert config_path(HOME, {"PYDESK_HOME": "/tmp/ph"}) == Path("/tmp/ph/config.json")
