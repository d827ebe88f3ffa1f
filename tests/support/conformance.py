"""The harness of the runtime conformance suite: per-test bundles run under one runtime.

A `Box` owns a directory, a `Runtime` with a private state dir, and every bundle it made
(each with a unique container id and cgroups path). Its `cleanup` must leave nothing: no
container, process, cgroup directory (parents included), mount or file. It never touches
anything it did not create.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.busybox import base_config, copy_rootfs, write_config
from tests.support.runtimes import (
    TIMEOUT,
    Result,
    Runtime,
    pid_alive,
    reap_children,
    remove_cgroup,
    token,
    unmount_all,
)


@dataclass
class Bundle:
    """An OCI bundle on disk; `config` is plain data the test edits before `write`."""

    id: str
    path: Path
    config: dict[str, Any]
    cgroups_path: str

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def write(self) -> None:
        write_config(self.path, self.config)

    def add_mount(self, destination: str, type_: str, source: str,
                  options: list[str] | None = None) -> None:
        mount: dict[str, Any] = {"destination": destination, "type": type_, "source": source}
        if options is not None:
            mount["options"] = options
        self.config["mounts"].append(mount)

    def add_bind(self, source: Path, destination: str, *, readonly: bool = False) -> None:
        self.add_mount(destination, "bind", str(source), ["rbind", "ro" if readonly else "rw"])


@dataclass
class Box:
    """Bundles for one runtime and one test, and everything needed to clean up after them."""

    runtime: Runtime
    workdir: Path
    template: Path
    bundles: list[Bundle] = field(default_factory=list)

    def bundle(self, args: list[str], name: str = "ctr") -> Bundle:
        tok = token()
        container_id = f"pydesk-test-{name}-{tok}"
        path = self.workdir / container_id
        path.mkdir(parents=True)
        copy_rootfs(self.template, path / "rootfs")
        # Two levels, as a daemon would use (/docker/<id>): the runtime creates the parent
        # too and removes only the leaf; cleanup removes the parent, which this test owns.
        cgroups_path = f"/pydesk-test-{tok}/{name}"
        bundle = Bundle(container_id, path, base_config(args, cgroups_path), cgroups_path)
        bundle.write()
        self.bundles.append(bundle)
        return bundle

    def sh(self, script: str, name: str = "ctr") -> Bundle:
        return self.bundle(["sh", "-c", script], name)

    def run(self, bundle: Bundle, timeout: float = TIMEOUT) -> Result:
        """`runtime run` of the bundle (config written first), stdio captured."""
        bundle.write()
        return self.runtime.run(bundle.id, bundle.path, timeout=timeout)

    def run_ok(self, bundle: Bundle) -> str:
        """Runs the bundle, asserts exit 0 and returns stdout."""
        return self.run(bundle).check().stdout

    def host_dir(self, name: str) -> Path:
        path = self.workdir / f"host-{name}-{token()}"
        path.mkdir()
        return path

    def cleanup(self) -> None:
        """Removes everything; every step runs even if an earlier one failed, then the first
        failure is raised (a leak is a bug worth an error)."""
        errors: list[Exception] = []
        steps: list[Callable[[], object]] = [self.runtime.cleanup, self._kill_pid_files,
                                             reap_children]
        steps += [functools.partial(remove_cgroup, b.cgroups_path) for b in self.bundles]
        steps += [functools.partial(unmount_all, [str(self.workdir)]), reap_children,
                  functools.partial(subprocess.run, ["rm", "-rf", "--one-file-system",
                                                     str(self.workdir)],
                                    check=False, timeout=TIMEOUT)]
        for step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _kill_pid_files(self) -> None:
        # A runtime that lost its state (or never used the cgroup) could leave an init running:
        # the pid files written under our directory name processes that are ours.
        for pid_file in self.workdir.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_file.read_text())
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
