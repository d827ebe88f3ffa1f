"""The fast path's parser: what it takes from Typer, and that anything else goes to Typer."""

from __future__ import annotations

import pytest

from pydesk.cli.context import FastCommand, parse_fast


def test_ps_with_every_known_flag() -> None:
    assert parse_fast(["-H", "unix:///s", "--mode=vm", "ps", "-aq", "--filter", "name=x",
                       "-f", "status=exited", "--filter=label=a"]) == FastCommand(
        "ps", "unix:///s", "vm", frozenset({"all", "quiet"}),
        ("name=x", "status=exited", "label=a"))


def test_images() -> None:
    assert parse_fast(["images", "--all", "-q"]) == FastCommand(
        "images", flags=frozenset({"all", "quiet"}))
    assert parse_fast(["--host=/s", "images"]) == FastCommand("images", host="/s")


def test_context_and_engine_which_env() -> None:
    assert parse_fast(["--mode", "vm", "context"]) == FastCommand("context", mode="vm")
    assert parse_fast(["engine", "which"]) == FastCommand("engine which")
    assert parse_fast(["-H", "/s", "engine", "env"]) == FastCommand("engine env", host="/s")


@pytest.mark.parametrize("argv", [
    ["context", "docker"], ["context", "--help"], ["engine"], ["engine", "start"],
    ["engine", "which", "-x"], ["context", "-a"],
    [], ["ps", "--help"], ["--debug", "ps"], ["ps", "-x"], ["ps", "--format", "{{.ID}}"],
    ["images", "--filter", "dangling=true"], ["run", "busybox"], ["-H"], ["ps", "--filter"],
    ["ps", "-a", "extra"], ["ps", "-"], ["--mode", "vm"],
])
def test_anything_else_goes_to_typer(argv: list[str]) -> None:
    assert parse_fast(argv) is None
