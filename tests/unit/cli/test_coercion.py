"""The pydantic-free coercion of plain parameters (``pydesk.cli.coercion``): every value gives
what Typer's own pydantic coercion gives (the same value and type, or the same error), the
kinds it leaves to Typer, and the hook into Typer."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
import typer.core
import typer.main
from typer import _click
from typer._coercion import build_runtime_param, resolve_type_descriptor
from typer.core import _TyperParameter
from typer.models import OptionInfo

from pydesk.cli import coercion
from pydesk.cli.main import build_app


def sample(s: str = "", i: int = 0, f: float = 0.0, b: bool = False,  # noqa: PLR0917
           many: Annotated[list[str] | None, typer.Option()] = None,
           p: Path = Path("/nonexistent-pydesk-test"), maybe: int | None = None) -> None:
    """A command with one parameter of each plain kind."""


def params() -> dict[str, tuple[_TyperParameter, _click.Context]]:
    app = typer.Typer()
    app.command()(sample)
    app.command("other")(sample)  # two commands: a group, whose subcommand is ``sample``
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands["sample"]
    ctx = _click.Context(command)
    return {p.name or "": (p, ctx) for p in command.params if isinstance(p, _TyperParameter)}


VALUES: dict[str, list[Any]] = {
    "s": ["abc", "", " x ", "-1", "é", b"bytes", 5],
    "i": ["42", "-7", "007", "0", "-0", " 3", "3 ", "+3", "1_000", "abc", "", "1.0", "1.5",
          "99999999999999999999", "١٢", 5, True, 2.0],
    "f": ["1.5", "-0.25", "3", "007.50", "1e3", "inf", "nan", ".5", "5.", "abc", "", 2, 2.5,
          "1234567890.123456789"],
    "b": [True, False, "true", "0", "yes", "no", "maybe", ""],
    "many": [("a", "b"), [], (), ("x",), ["a", 1], ("",)],
    "p": [Path("/tmp"), Path("/nonexistent-pydesk-test"), "/tmp", "relative/dir/"],
    "maybe": ["12", "x", None],
}


def outcome(param: _TyperParameter, ctx: _click.Context, runtime: Any, value: Any) -> Any:
    try:
        result = runtime.coerce(value, param=param, ctx=ctx)
    except _click.exceptions.BadParameter as e:
        return ("error", e.format_message())
    return ("value", type(result).__name__, repr(result))


@pytest.mark.parametrize("name", sorted(VALUES))
def test_every_value_coerces_as_typer_does(name: str) -> None:
    param, ctx = params()[name]
    plain = coercion.runtime_param(param.type_descriptor)
    assert isinstance(plain, coercion.PlainRuntimeParam)
    typers = build_runtime_param(param.type_descriptor)
    for value in VALUES[name]:
        assert outcome(param, ctx, plain, value) == outcome(param, ctx, typers, value), value


@pytest.mark.parametrize(("kind", "value"), [
    (coercion.Kind.STR, "abc"), (coercion.Kind.INT, "-12"), (coercion.Kind.INT, 3),
    (coercion.Kind.FLOAT, "1.25"), (coercion.Kind.BOOL, False),
    (coercion.Kind.STR_LIST, ("a", "b"))])
def test_the_values_a_command_line_gives_take_the_shortcut(kind: coercion.Kind,
                                                          value: Any) -> None:
    assert coercion.shortcut(kind, value) is not coercion.UNHANDLED


@pytest.mark.parametrize(("kind", "value"), [
    (coercion.Kind.STR, b"x"), (coercion.Kind.INT, "+3"), (coercion.Kind.INT, "1.0"),
    (coercion.Kind.INT, True), (coercion.Kind.FLOAT, "1e3"), (coercion.Kind.FLOAT, 2),
    (coercion.Kind.BOOL, "yes"), (coercion.Kind.STR_LIST, ["a", 1]),
    (coercion.Kind.PATH, "/tmp")])
def test_odd_values_go_to_typer(kind: coercion.Kind, value: Any) -> None:
    assert coercion.shortcut(kind, value) is coercion.UNHANDLED


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(("annotation", "info"), [
    (int, OptionInfo(min=0)), (float, OptionInfo(max=1.0)), (str, OptionInfo(parser=str.upper)),
    (Color, OptionInfo()), (tuple[str, str], OptionInfo()), (list[int], OptionInfo()),
    (Path, OptionInfo(path_type=str)), (typer.FileText, OptionInfo())])
def test_other_kinds_are_left_to_typer(annotation: Any, info: OptionInfo) -> None:
    descriptor = resolve_type_descriptor(annotation, info)
    assert coercion.kind_of(descriptor) is None
    assert not isinstance(coercion.runtime_param(descriptor), coercion.PlainRuntimeParam)


def walk(command: _click.Command) -> Iterator[tuple[str, _click.Parameter]]:
    for param in command.params:
        yield f"{command.name} {param.name}", param
    if isinstance(command, typer.core.TyperGroup):
        for sub in command.commands.values():
            yield from walk(sub)


def test_every_pydesk_parameter_is_plain() -> None:
    # Otherwise that command pays for pydantic again (tests/unit/cli/test_startup.py).
    command = typer.main.get_command(build_app())
    found = [(where, coercion.kind_of(p.type_descriptor)) for where, p in walk(command)
             if isinstance(p, _TyperParameter)]
    assert len(found) > 100
    assert [where for where, kind in found if kind is None] == []


@pytest.fixture
def typer_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer's own factory back in place after the test (install() changes it)."""
    monkeypatch.setattr(typer.core, "build_runtime_param", build_runtime_param)


@pytest.mark.usefixtures("typer_factory")
def test_install_makes_typer_use_the_plain_coercion() -> None:
    assert coercion.install() is True
    assert coercion.install() is True  # twice is fine
    param, ctx = params()["i"]
    assert isinstance(param.get_runtime_param(), coercion.PlainRuntimeParam)
    assert param.process_value(ctx, "41") == 41


@pytest.mark.usefixtures("typer_factory")
def test_install_leaves_an_unknown_typer_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def someone_elses(descriptor: Any) -> Any:
        return build_runtime_param(descriptor)

    monkeypatch.setattr(typer.core, "build_runtime_param", someone_elses)
    assert coercion.install() is False
    assert typer.core.build_runtime_param is someone_elses  # type: ignore[attr-defined]
