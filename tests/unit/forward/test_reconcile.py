"""The reconcile diff and its application against a recording backend."""

from __future__ import annotations

import pytest

from pydesk.forward.backend import BackendUnavailable, PortInUse
from pydesk.forward.desired import Forward, Proto
from pydesk.forward.reconcile import apply, plan
from tests.unit.forward.fakes import RecordingBackend


def fwd(port: int, name: str = "", ip: str = "127.0.0.1", proto: Proto = Proto.TCP) -> Forward:
    return Forward(proto, ip, port, port, name, f"{port}/{proto}" if name else "")


SSH = Forward(Proto.TCP, "127.0.0.1", 40022, 22)


def test_plan_adds_missing_removes_only_ours() -> None:
    wanted = frozenset({fwd(8080, "web"), fwd(9090, "api")})
    existing = frozenset({SSH, fwd(9090), fwd(7070)})
    ours = frozenset({fwd(9090), fwd(7070), fwd(6060)})  # 6060: QEMU lost it (restart)
    p = plan(wanted, existing, ours)
    assert p.add == {fwd(8080)}
    assert p.remove == {fwd(7070)}
    assert p.keep == {fwd(9090)}
    assert next(iter(p.add)).container == "web"
    assert next(iter(p.keep)).container == "api"  # the wanted one, with its name


def test_plan_never_touches_or_adopts_a_rule_it_did_not_make() -> None:
    p = plan(frozenset({fwd(40022)}), frozenset({SSH, fwd(40022)}), frozenset())
    assert p.empty and p.keep == frozenset()
    assert plan(frozenset(), frozenset({SSH}), frozenset()).empty


def test_plan_same_port_other_protocol_or_address_is_another_rule() -> None:
    wanted = frozenset({fwd(53, proto=Proto.UDP), fwd(80, ip="0.0.0.0")})
    p = plan(wanted, frozenset({fwd(53), fwd(80)}), frozenset({fwd(53), fwd(80)}))
    assert p.add == wanted
    assert p.remove == {fwd(53), fwd(80)}


def test_apply_removes_first_and_reports_refused() -> None:
    backend = RecordingBackend({fwd(8080)}, taken={9090})
    p = plan(frozenset({fwd(8081, "b"), fwd(9090, "c")}), backend.list(), frozenset({fwd(8080)}))
    outcome = apply(p, backend)
    assert backend.calls == [("remove", fwd(8080)), ("add", fwd(8081)), ("add", fwd(9090))]
    assert outcome.made == {fwd(8081)}
    (failed,) = outcome.failed
    assert failed.forward.container == "c"
    assert failed.error == "host port 9090 is already in use"
    assert failed.message() == ("host port 9090 is already in use: container c's 9090/tcp "
                                "is not reachable from the host")
    assert backend.rules == {fwd(8081)}


def test_apply_propagates_an_unavailable_backend() -> None:
    backend = RecordingBackend(set(), down=True)
    with pytest.raises(BackendUnavailable):
        apply(plan(frozenset({fwd(1)}), frozenset(), frozenset()), backend)


def test_port_in_use_is_refused() -> None:
    assert issubclass(PortInUse, Exception)
