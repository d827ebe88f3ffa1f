"""Driving ``pydesk vm`` for the vm tier: the CLI as a subprocess on a private PYDESK_HOME.

What it is for: acceptance tests run the real console script (as a user would), read the
instance's files through ``pydesk.vm.instance``, and always tear the agent and QEMU down
(:meth:`VmDriver.teardown` kills whatever pid files still name, then checks nothing is left).
What it must never do: touch the user's ~/.pydesk, or leave a QEMU or agent running.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from pydesk.agent.process import find_agent, find_qemu
from pydesk.vm.channel import GuestChannel
from pydesk.vm.instance import InstanceFiles, ensure_keys, instance_files

PYDESK = str(Path(sys.executable).with_name("pydesk"))


def private_copy(image: Path, target: Path) -> Path:
    """The image's files linked (or copied) into ``target``: the image cache prunes old images,
    possibly while a test or a benchmark still boots one."""
    import shutil

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(image, target, copy_function=link_or_copy)
    return target


def bench_image(home: Path) -> Path:
    """For the benchmarks that boot the guest: $PYDESK_VM_IMAGE_DIR's image, else the current
    sources' (built if missing), linked into ``home/image`` (:func:`private_copy`)."""
    from pydesk.vm.image import ensure_image
    from pydesk.vm.lifecycle import IMAGE_DIR_ENV

    override = os.environ.get(IMAGE_DIR_ENV)
    image = Path(override) if override else ensure_image(
        lambda m: print(f"image: {m}", file=sys.stderr))
    return private_copy(image, home / "image")


class VmDriver:
    def __init__(self, home: Path, image_dir: Path, name: str = "default") -> None:
        self.home = home
        self.name = name
        self.env = dict(os.environ, PYDESK_HOME=str(home), PYDESK_VM_IMAGE_DIR=str(image_dir))
        self.files: InstanceFiles = instance_files(name, home)

    def cli(self, *args: str, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([PYDESK, *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"pydesk {' '.join(args)} -> {result.returncode}\n"
                                 f"{result.stdout}\n{result.stderr}\n{self.diagnostics()}")
        return result

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.cli("vm", "status", "--json", "--name", self.name).stdout))

    def channel(self) -> GuestChannel:
        port = json.loads(self.files.runtime.read_text())["ssh_port"]
        keys = ensure_keys(self.files)
        return GuestChannel.connect(port, keys.client_private, keys.host_public_line)

    def qemu(self) -> Any:
        return find_qemu(self.files)

    def wait_state(self, state: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            current = self.status()
            if current["state"] == state or time.monotonic() > deadline:
                return current
            time.sleep(0.2)

    def diagnostics(self) -> str:
        parts = []
        for path in (self.files.status, self.files.agent_log, self.files.qemu_log,
                     self.files.console_log):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def teardown(self) -> None:
        """Kills what is left (agent, QEMU) and checks nothing of this instance runs."""
        for proc in (find_agent(self.files), find_qemu(self.files)):
            if proc is not None:
                try:
                    proc.kill()
                    proc.wait(10)
                except psutil.NoSuchProcess:
                    pass
        marker = str(self.home)
        leftovers = []
        for proc in psutil.process_iter(["cmdline"]):
            if any(marker in arg for arg in proc.info["cmdline"] or ()):
                leftovers.append(proc)
                proc.kill()
        assert not leftovers, f"processes left behind: {[p.pid for p in leftovers]}"
