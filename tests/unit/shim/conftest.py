"""The shim's unit-tier fixture: real shims over the stand-in runtime (fake_runtime.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydeskd.shim.client import ShimClient, start_shim
from pydeskd.shim.protocol import ShimError

FAKE = Path(__file__).with_name("fake_runtime.py")


class Env:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.runtime = base / "runtime"
        self.runtime.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.runtime.chmod(0o755)
        self.clients: list[ShimClient] = []
        self.count = 0

    def start(self, args: list[str], stdin: bool = False, tty: bool = False,
              **kwargs: Any) -> ShimClient:
        self.count += 1
        bundle = self.base / f"b{self.count}"
        bundle.mkdir()
        process = {"args": args, "terminal": tty}
        (bundle / "config.json").write_text(json.dumps({"process": process}))
        client = start_shim(f"c{self.count}", bundle, self.base / f"s{self.count}",
                            runtime=self.runtime, runtime_root=self.base / "root",
                            stdin=stdin, **kwargs)
        self.clients.append(client)
        return client

    def cleanup(self) -> None:
        for client in self.clients:
            if not client.path.exists():
                continue
            for call in (lambda c=client: c.kill(signal.SIGKILL),
                         lambda c=client: c.wait(timeout=10), lambda c=client: c.delete()):
                with contextlib.suppress(OSError, ShimError):
                    call()
            # A shim that did not go: kill it and its process by pid.
            for name, key in (("shim.json", "pid"), ("init.pid", None)):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    text = (client.path.parent / name).read_text()
                    os.kill(int(json.loads(text)[key] if key else text), signal.SIGKILL)
        for proc in Path("/proc").iterdir():  # anything still running from this test
            with contextlib.suppress(OSError, ValueError):
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                if str(self.base) in cmdline and int(proc.name) != os.getpid():
                    os.kill(int(proc.name), signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def env() -> Iterator[Env]:
    shim_env = Env(Path(tempfile.mkdtemp(prefix="pds-u-", dir="/tmp")))
    try:
        yield shim_env
    finally:
        shim_env.cleanup()
