"""``pydesk doctor``: what is wrong with the engine setup and how to fix it.

Thin by rule: the checks are :mod:`pydesk.cli.doctor_checks` (pure, over a seam), their real
probes and the rendering :mod:`pydesk.cli.doctor_probes`, both imported when the command runs.
Exit status 0 when no check failed (warnings and skips do not fail), 1 otherwise.
What it must never do: change anything, or run QEMU under an accelerator.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer


def doctor(
    name: Annotated[str, typer.Option("--name", "-n", help="The VM instance's name.")]
    = "default",
    as_json: Annotated[bool, typer.Option("--json", help="The checks as one JSON object.")]
    = False,
) -> None:
    """Check the engine setup: what is wrong, and how to fix it (exit 1 if a check fails)."""
    from pydesk.cli.doctor_checks import Verdict, healthy, run_checks
    from pydesk.cli.doctor_probes import real_probes, render

    checks = run_checks(real_probes(name), name)
    ok = healthy(checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        print(render(checks))
        failed = sum(c.verdict is Verdict.FAIL for c in checks)
        print(f"\n{'all checks passed' if ok else f'{failed} check(s) failed'}")
    raise typer.Exit(0 if ok else 1)
