"""OCI hooks: run each hook program with the container's state JSON on its stdin.

A hook gets exactly the spec's ``args`` (``args[0]`` is its argv[0]) and ``env``, and is killed
after ``timeout`` seconds. :func:`run_hooks` raises SetupFailed on the first failure
(prestart, createRuntime, createContainer, startContainer fail the operation);
:func:`run_hooks_warn` only reports failures (poststart, poststop), as runc does.
Imported only when a spec has hooks (subprocess costs start-up time).
"""

from __future__ import annotations

import json
import subprocess

from pydeskd.runtime.errors import SetupFailed

TYPE_CHECKING = False  # typing costs start-up time: mypy only
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from pydeskd.runtime.spec import Hook


def run_hook(hook: Hook, state: dict[str, Any],
             started: Callable[[int], None] | None = None) -> None:
    """Runs one hook; raises SetupFailed with its exit status and output on failure.
    ``started`` gets the hook's pid as soon as it runs (``create`` records it, so that a
    ``delete`` after a killed ``create`` can end the hook too)."""
    argv = list(hook.args) or [hook.path]
    env = dict(e.split("=", 1) for e in hook.env)
    try:
        proc = subprocess.Popen(argv, executable=hook.path, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, close_fds=True)
    except OSError as exc:
        raise SetupFailed(f"hook {hook.path}: {exc.strerror or exc}") from None
    with proc:
        try:
            if started is not None:
                started(proc.pid)
            output_bytes, _ = proc.communicate(json.dumps(state).encode(), timeout=hook.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise SetupFailed(f"hook {hook.path}: timed out after {hook.timeout}s") from None
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        output = output_bytes.decode(errors="replace").strip()
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        raise SetupFailed(f"hook {hook.path}: {how}" + (f": {output}" if output else ""))


def run_hooks(hooks: Sequence[Hook], kind: str, state: dict[str, Any],
              started: Callable[[int], None] | None = None) -> None:
    for hook in hooks:
        try:
            run_hook(hook, state, started)
        except SetupFailed as exc:
            raise SetupFailed(f"{kind} {exc}") from None


def run_hooks_warn(hooks: Sequence[Hook], kind: str, state: dict[str, Any],
                   warn: Callable[[str], None]) -> None:
    for hook in hooks:
        try:
            run_hook(hook, state)
        except SetupFailed as exc:
            warn(f"{kind} {exc}")
