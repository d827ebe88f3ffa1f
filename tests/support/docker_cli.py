"""The official docker CLI against one engine (``DOCKER_HOST`` set, a private empty config),
for benchmarks that run the same commands on pydeskd and on the Docker Engine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.pydeskd import DOCKER


class DockerCli:
    timeout: float | None = None
    """Seconds a command may take; None: no timeout (subprocess then blocks in waitpid, so no
    polling rounds a timed command up)."""

    def __init__(self, name: str, host: str, config_dir: Path) -> None:
        self.name = name
        config_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env.update(DOCKER_HOST=host, DOCKER_CONFIG=str(config_dir))

    def run(self, *args: str) -> str:
        """stdout of ``docker ARGS``; RuntimeError with stderr when it fails."""
        done = subprocess.run([DOCKER, *args], capture_output=True, env=self.env, check=False,
                              timeout=self.timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: docker {' '.join(args)} failed "
                               f"({done.returncode}): {done.stderr.decode().strip()}")
        return done.stdout.decode()
