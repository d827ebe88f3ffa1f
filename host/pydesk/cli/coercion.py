"""Typer's parameter coercion for plain values, without pydantic.

Typer 0.29 coerces each parameter's value through a pydantic ``TypeAdapter`` that it builds the
first time the parameter is processed (``typer._coercion.build_runtime_param``). Importing
pydantic and building the adapters of one command costs about 90 ms of CPU here: more than half
of the CLI's 150 ms start-up budget (docs/cli.md). pydesk's parameters are plain (str, int,
float, bool, list[str], Path) and what a command line gives them is almost always already
right (a str for a str, digits for an int). After :func:`install`, each such parameter gets a
coercer that takes those values as they are and hands every other value to Typer's own
pydantic coercion, so odd input and every error message stay exactly Typer's.

It relies on Typer looking its coercion factory up in ``typer.core`` (typer is pinned in
pyproject.toml; tests/unit/cli/test_coercion.py checks both the hook and that every shortcut
returns what pydantic returns). What it must never do: change a value a parameter receives, or
the message of a bad one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args

import typer.core
from typer import _click
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer._param_types import coerce_cli_path
from typer.core import _TyperParameter

# The strings whose value as a Python int or float is the one pydantic gives (lax mode);
# anything else (spaces, "+3", "1_000", "1e3", "inf"...) goes to pydantic.
INT = re.compile(r"-?[0-9]{1,18}")
FLOAT = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")


class Kind(Enum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR_LIST = "list[str]"
    PATH = "Path"


class _Unhandled:
    """Marks a value the shortcut leaves to pydantic."""


UNHANDLED = _Unhandled()


def kind_of(descriptor: TypeDescriptor) -> Kind | None:
    """The plain kind of a parameter, or None when Typer's own coercion must handle it (a
    parser, bounds, choices, dates, files, tuples, other types)."""
    info = descriptor.parameter_info
    if (descriptor.file_annotation is not None or info.parser is not None
            or info.min is not None or info.max is not None or descriptor.is_choice):
        return None
    annotation = descriptor.annotation
    if descriptor.is_list and get_args(annotation) == (str,):
        return Kind.STR_LIST
    plain = {str: Kind.STR, int: Kind.INT, float: Kind.FLOAT, bool: Kind.BOOL}
    if annotation in plain:
        return plain[annotation]
    if annotation is Path and info.path_type is None:
        return Kind.PATH
    return None


def shortcut(kind: Kind, value: Any) -> Any:
    """``value`` coerced as pydantic would, when that is certain without it; else UNHANDLED."""
    if kind is Kind.STR and type(value) is str:
        return value
    if kind is Kind.STR_LIST and isinstance(value, (list, tuple)) and \
            all(type(item) is str for item in value):
        return list(value)
    if kind is Kind.BOOL and type(value) is bool:
        return value
    if kind is Kind.INT:
        if type(value) is int:
            return value
        if type(value) is str and INT.fullmatch(value):
            return int(value)
    if kind is Kind.FLOAT:
        if type(value) is float:
            return value
        if type(value) is str and FLOAT.fullmatch(value):
            return float(value)
    return UNHANDLED


@dataclass(frozen=True)
class PlainRuntimeParam(RuntimeParam):
    """Typer's runtime coercion for one plain parameter: the shortcut, else Typer's own."""

    kind: Kind
    descriptor: TypeDescriptor

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: _click.Context) -> Any:
        if self.kind is Kind.PATH and isinstance(value, Path):
            # What Typer's path adapter does for a Path value (it needs pydantic only for str).
            return coerce_cli_path(value, self.parameter_info, path_type=Path, param=param,
                                   ctx=ctx)
        plain = shortcut(self.kind, value)
        if plain is not UNHANDLED:
            return plain
        return build_runtime_param(self.descriptor)._coerce_value(value, param=param, ctx=ctx)


def runtime_param(descriptor: TypeDescriptor) -> RuntimeParam:
    """Typer's runtime coercion for a parameter: the pydantic-free one for a plain parameter,
    else Typer's own (``typer._coercion.build_runtime_param``)."""
    kind = kind_of(descriptor)
    if kind is None:
        return build_runtime_param(descriptor)
    return PlainRuntimeParam(parameter_info=descriptor.parameter_info,
                             annotation=descriptor.annotation, kind=kind, descriptor=descriptor)


def install() -> bool:
    """Make Typer coerce plain parameters with :func:`runtime_param` in this process (for
    every parameter processed from now on: each command's, their ``--help`` options');
    whether it could. Typer looks its factory up in ``typer.core`` at each parameter's first
    use; if that is no longer the function expected, nothing changes (Typer's own path runs)."""
    current = getattr(typer.core, "build_runtime_param", None)
    if current is build_runtime_param:
        typer.core.build_runtime_param = runtime_param  # type: ignore[attr-defined]
        return True
    return current is runtime_param
