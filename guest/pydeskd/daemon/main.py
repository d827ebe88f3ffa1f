"""The `pydeskd` entry point.

The Engine API daemon is built by the issue "pydeskd: the daemon that speaks the Docker Engine
API"; until then this entry point says so instead of pretending to serve.
"""

from __future__ import annotations

import sys


def main() -> None:
    sys.stderr.write("pydeskd: the Docker Engine API daemon is not built yet; "
                     "use pydesk-shim and pydesk-runc directly for now\n")
    sys.exit(2)
