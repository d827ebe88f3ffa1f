"""What every engine command shares: the global ``--host``/``--mode`` options, the docker-py
client on the selected engine, and the engine's errors as docker prints them.

docker-py is imported here lazily (inside functions) so ``pydesk --help`` never pays for it;
importing it costs about 200 ms here (requests, paramiko; ~100 ms without its SSH transport,
:func:`skip_docker_ssh`), so the hot read-only commands (``ps``, ``images``) use
:func:`get_json`, a few lines of HTTP/1.1 over the unix socket.
What it must never do: render tables or hold a command's logic.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")

# Set by the root callback in main.py.
options: dict[str, str | None] = {"host": None, "mode": None}


def engine_url() -> str:
    from pydesk.endpoint import resolve

    try:
        return resolve(options["host"], options["mode"]).base_url
    except Exception:  # only for an error message
        return "?"


class EngineError(Exception):
    """An engine's error answer to :func:`get_json` (its ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def api() -> Any:
    """A docker-py ``APIClient`` on the selected engine (NoEngineError when none answers)."""
    from pydesk.endpoint import resolve

    engine = resolve(options["host"], options["mode"])
    import docker  # type: ignore[import-untyped]

    return docker.APIClient(base_url=engine.base_url, version="auto", timeout=None)


def skip_docker_ssh(host: str | None) -> bool:
    """Keep docker-py from importing its SSH transport in this process, unless ``host`` (the
    engine asked for by ``-H``/PYDESK_HOST) is an ``ssh://`` URL; whether it did.

    docker-py imports ``docker.transport.sshconn`` (paramiko, and invoke through it: ~80 ms of
    CPU here) as soon as it is imported, but uses it only for ``ssh://`` engines; pydesk's are
    ``unix://`` (or ``tcp://``). docker-py treats that transport as optional (the ``docker[ssh]``
    extra): a None in ``sys.modules`` makes its import fail as when paramiko is not installed.
    """
    if "docker" in sys.modules or (host or "").startswith("ssh://"):
        return False
    if "docker.transport.sshconn" not in sys.modules:
        sys.modules["docker.transport.sshconn"] = None  # type: ignore[assignment]
    return sys.modules["docker.transport.sshconn"] is None


def dechunk(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body -> its bytes."""
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """A whole HTTP/1.1 response (the server closed the connection) -> (status, body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(b":") for line in lines[1:])}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = dechunk(body)
    return status, body


def get_json(path: str, params: Mapping[str, str] | None = None) -> Any:
    """GET ``path`` on the engine and decode its JSON; EngineError on an error status."""
    from pydesk.endpoint import resolve

    engine = resolve(options["host"], options["mode"])
    if not engine.base_url.startswith("unix://"):  # TCP engines: docker-py's transport
        client = api()
        return client._result(client._get(client._url(path), params=params), json=True)
    return unix_get_json(engine.base_url.removeprefix("unix://"), path, params)


def unix_get_json(socket_path: str, path: str, params: Mapping[str, str] | None = None,
                  timeout: float | None = None) -> Any:
    """GET ``path`` on the Engine API at the unix socket ``socket_path``; its JSON.
    EngineError on an error status, OSError when nothing answers."""
    import json
    import socket
    from urllib.parse import urlencode

    query = f"?{urlencode(params)}" if params else ""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(f"GET {path}{query} HTTP/1.1\r\nHost: pydesk\r\n"
                  "Connection: close\r\n\r\n".encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    status, body = parse_response(b"".join(chunks))
    if status >= 400:
        try:
            message = str(json.loads(body).get("message", ""))
        except ValueError:
            message = body.decode(errors="replace").strip()
        raise EngineError(status, message)
    return json.loads(body)


def fail(message: str, code: int = 1) -> typer.Exit:
    print(message, file=sys.stderr)
    return typer.Exit(code)


def docker_errors(e: Exception, code: int) -> None:
    """docker-py's errors as docker prints them (raises typer.Exit), others left alone."""
    import docker.errors  # type: ignore[import-untyped]

    if isinstance(e, docker.errors.APIError):
        raise fail(f"Error response from daemon: {e.explanation or e}", code) from None
    if isinstance(e, docker.errors.DockerException):
        # docker-py asks the API version first: that is where a dead socket shows.
        prefix = (f"Cannot connect to the engine at {engine_url()}: "
                  if "server API version" in str(e) else "error: ")
        raise fail(f"{prefix}{e}", code) from None
    if isinstance(e, OSError):  # requests' ConnectionError
        raise fail(f"Cannot connect to the engine at {engine_url()}: {e}", code) from None


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
            except EngineError as e:
                raise fail(f"Error response from daemon: {e.message}", code) from None
            except Exception as e:
                if "docker.errors" in sys.modules:  # docker-py was used (and is loaded)
                    docker_errors(e, code)
                if isinstance(e, OSError):  # a dead socket on the fast path
                    raise fail(f"Cannot connect to the engine at {engine_url()}: {e}",
                               code) from None
                raise
        return run
    return wrap


# --- the fast path -----------------------------------------------------------------------------
# Typer validates parameters through pydantic (about 50 ms to import here): the listing
# commands people run all day skip Typer when their flags are simple. Anything the fast path
# does not know (--help included) goes to Typer, which stays the one definition of the CLI.

GLOBAL_VALUES = {"-H": "host", "--host": "host", "--mode": "mode"}
FAST_FLAGS: dict[str, dict[str, str]] = {
    "ps": {"a": "all", "q": "quiet", "all": "all", "quiet": "quiet"},
    "images": {"a": "all", "q": "quiet", "all": "all", "quiet": "quiet"},
    # Commands without flags: ``pydesk context`` (which engine and why), ``engine which|env``.
    "context": {}, "engine which": {}, "engine env": {}}


@dataclass(frozen=True)
class FastCommand:
    command: str
    host: str | None = None
    mode: str | None = None
    flags: frozenset[str] = frozenset()
    filters: tuple[str, ...] = ()


def _split_value(arg: str, rest: list[str]) -> str | None:
    if "=" in arg:
        return arg.partition("=")[2]
    return rest.pop(0) if rest else None


def parse_fast(argv: Sequence[str]) -> FastCommand | None:
    """``[-H X] [--mode M] ps|images [-a] [-q] [--filter K=V]``, ``context``, ``engine which``
    and ``engine env`` -> FastCommand, else None."""
    rest, command = list(argv), None
    found: dict[str, str | None] = {"host": None, "mode": None}
    flags: set[str] = set()
    filters: list[str] = []
    while rest:
        arg = rest.pop(0)
        name = arg.partition("=")[0]
        if command is None and name in GLOBAL_VALUES:
            value = _split_value(arg, rest)
            if value is None:
                return None
            found[GLOBAL_VALUES[name]] = value
        elif command is None and arg in FAST_FLAGS:
            command = arg
        elif command is None and arg == "engine" and rest and f"engine {rest[0]}" in FAST_FLAGS:
            command = f"engine {rest.pop(0)}"
        elif command == "ps" and name in ("--filter", "-f"):
            value = _split_value(arg, rest)
            if value is None:
                return None
            filters.append(value)
        elif command and arg.startswith("--") and arg[2:] in FAST_FLAGS[command]:
            flags.add(FAST_FLAGS[command][arg[2:]])
        elif command and arg.startswith("-") and len(arg) > 1 and \
                all(c in FAST_FLAGS[command] for c in arg[1:]):
            flags.update(FAST_FLAGS[command][c] for c in arg[1:])
        else:
            return None
    if command is None:
        return None
    return FastCommand(command, found["host"], found["mode"], frozenset(flags), tuple(filters))


def fast_path(argv: Sequence[str]) -> int | None:
    """Run ``argv`` without Typer when :func:`parse_fast` knows it; the exit code, else None."""
    parsed = parse_fast(argv)
    if parsed is None:
        return None
    options.update(host=parsed.host, mode=parsed.mode)
    all_, quiet = "all" in parsed.flags, "quiet" in parsed.flags

    if parsed.command == "context":
        from pydesk.cli.contexts import show_engine

        try:
            show_engine()
        except typer.Exit as e:
            return int(e.exit_code)
        return 0

    @engine_errors()
    def run() -> None:
        if parsed.command.startswith("engine "):
            from pydesk.cli.engine import env, which

            (which if parsed.command == "engine which" else env)()
        elif parsed.command == "ps":
            from pydesk.cli.containers import list_containers

            list_containers(all_, quiet, parsed.filters)
        else:
            from pydesk.cli.images import list_images

            list_images(all_, quiet)

    try:
        run()
    except typer.Exit as e:
        return int(e.exit_code)
    return 0
