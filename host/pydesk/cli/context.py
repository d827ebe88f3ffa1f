"""What every engine command shares: the global ``--host``/``--mode`` options, the docker-py
client on the selected engine, and the engine's errors as docker prints them.

docker-py is imported here lazily (inside functions) so ``pydesk --help`` never pays for it.
What it must never do: render tables or hold a command's logic.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")

# Set by the root callback in main.py.
options: dict[str, str | None] = {"host": None, "mode": None}


def api() -> Any:
    """A docker-py ``APIClient`` on the selected engine (NoEngineError when none answers)."""
    import docker  # type: ignore[import-untyped]

    from pydesk.endpoint import resolve

    engine = resolve(options["host"], options["mode"])
    return docker.APIClient(base_url=engine.base_url, version="auto", timeout=None)


def fail(message: str, code: int = 1) -> typer.Exit:
    print(message, file=sys.stderr)
    return typer.Exit(code)


def engine_errors(code: int = 1) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Engine errors as one docker-style line (``Error response from daemon: ...``),
    and exit ``code``."""
    def wrap(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            from pydesk.endpoint import NoEngineError

            try:
                return func(*args, **kwargs)
            except NoEngineError as e:
                raise fail(f"{e.message}\nhint: {e.hint}", code) from None
            except Exception as e:
                import docker.errors  # type: ignore[import-untyped]

                if isinstance(e, docker.errors.APIError):
                    raise fail(f"Error response from daemon: {e.explanation or e}", code) from None
                if isinstance(e, docker.errors.DockerException):
                    raise fail(f"error: {e}", code) from None
                raise
        return run
    return wrap
