"""Execs: ``docker exec`` as Docker models it -- create (an ID and a recorded config), start
(attached or detached), inspect, resize -- on the container's shim.

What it is for: the process of an exec is the container's own (from its config.json, as moby
does) with the exec's args, env (overriding the container's), user (resolved in the
container's /etc/passwd), cwd and tty, and every capability when privileged, handed to
``ShimClient.exec``; a thread waits for
its exit and records the code. Exec records live in memory, as in dockerd (a daemon restart
forgets them), and are dropped with their container.

What it must never do: start an exec in a container that is not running (Conflict), or start
one exec twice.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.daemon.containers.attach import Attachment
from pydeskd.daemon.containers.errors import Conflict, StartFailed
from pydeskd.daemon.containers.names import new_id
from pydeskd.daemon.containers.spec import exec_process
from pydeskd.shim.client import ShimClient
from pydeskd.shim.protocol import ProtocolError, ShimError

EXIT_CMD_NOT_FOUND = 127
EXIT_CANNOT_INVOKE = 126


def start_failure_exit_code(cmd: str, message: str) -> int:
    """The exit code of an exec the runtime could not start, by dockerd's rules
    (translateContainerdStartErr): 127 when the error names the command and says it does not
    exist, or says an executable was not found; 126 for anything else (a missing working
    directory, a permission error...), which ``docker exec`` then exits with."""
    text = message.lower()
    missing = "no such file or directory" in text or "executable file not found" in text
    if (missing and cmd.lower() in text) or "executable file not found" in text:
        return EXIT_CMD_NOT_FOUND
    return EXIT_CANNOT_INVOKE

if TYPE_CHECKING:
    from pydeskd.daemon.containers.service import ContainerService


@dataclass
class ExecRecord:
    id: str
    container_id: str
    cmd: list[str]
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    privileged: bool = False
    detach_keys: str = ""
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def to_inspect(self) -> dict[str, Any]:
        """Docker's ExecInspect."""
        return {
            "ID": self.id, "Running": self.running, "ExitCode": self.exit_code,
            "ProcessConfig": {"tty": self.tty, "entrypoint": self.cmd[0] if self.cmd else "",
                              "arguments": self.cmd[1:], "privileged": self.privileged,
                              "user": self.user},
            "OpenStdin": self.attach_stdin, "OpenStderr": self.attach_stderr,
            "OpenStdout": self.attach_stdout, "CanRemove": False,
            "ContainerID": self.container_id, "DetachKeys": self.detach_keys, "Pid": self.pid,
        }


class Execs:
    def __init__(self, service: ContainerService) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._execs: dict[str, ExecRecord] = {}

    def create(self, ref: str, cmd: Sequence[str], *, env: Sequence[str] = (), user: str = "",
               workdir: str = "", tty: bool = False, attach_stdin: bool = False,
               attach_stdout: bool = True, attach_stderr: bool = True,
               privileged: bool = False, detach_keys: str = "") -> str:
        """A new exec ID. Raises NotFound, Conflict (not running, paused), InvalidArgument."""
        svc = self.service
        c = svc.get(ref)
        if not cmd:
            raise InvalidArgument("No exec command specified")
        with svc.store.lock(c.id):
            c.state.check_can_exec(c.id)
            record = ExecRecord(new_id(), c.id, list(cmd), list(env), user, workdir, tty,
                                attach_stdin, attach_stdout, attach_stderr, privileged,
                                detach_keys)
            with self._lock:
                self._execs[record.id] = record
            c.exec_ids.append(record.id)
        svc.publish(c, "exec_create: " + " ".join(cmd), execID=record.id)
        return record.id

    def get(self, exec_id: str) -> ExecRecord:
        with self._lock:
            record = self._execs.get(exec_id)
        if record is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return record

    def inspect(self, exec_id: str) -> dict[str, Any]:
        return self.get(exec_id).to_inspect()

    def check_startable(self, exec_id: str) -> None:
        """What ``start`` would refuse, checked before a route answers its client.
        Raises NotFound, Conflict."""
        record = self.get(exec_id)
        c = self.service.get(record.container_id)
        with self.service.store.lock(c.id):
            if record.started:
                raise Conflict(f"Error: Exec command {exec_id} has already run")
            c.state.check_can_exec(c.id)

    def start(self, exec_id: str, detach: bool = False,
              tty: bool | None = None) -> Attachment | None:
        """Starts the exec; unless ``detach``, returns its attachment (connected before the
        process starts, so no output is lost). Raises NotFound, Conflict (already started,
        container not running), StartFailed."""
        record = self.get(exec_id)
        svc = self.service
        c = svc.get(record.container_id)
        with svc.store.lock(c.id):
            if record.started:
                raise Conflict(f"Error: Exec command {exec_id} has already run")
            c.state.check_can_exec(c.id)
            shim = svc.live(c).shim
            if shim is None:
                raise Conflict(f"container {c.id} is not running")
            record.started = True
        use_tty = record.tty if tty is None else tty
        try:
            template = json.loads((svc.paths.bundle(c.id) / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise StartFailed(f"cannot read the container's spec: {err}") from None
        proc = exec_process(template.get("process") or {}, svc.paths.rootfs(c.id), record.cmd,
                            env=record.env, user=record.user, cwd=record.workdir, tty=use_tty,
                            privileged=record.privileged)
        attachment: Attachment | None = None
        try:
            shim.exec(exec_id, proc, tty=use_tty, stdin=record.attach_stdin and not detach)
            if not detach:
                stream = shim.attach(exec_id, stdin=record.attach_stdin)
                attachment = Attachment(stream, use_tty, record.attach_stdin,
                                        record.attach_stdout, record.attach_stderr)
            state = shim.start(exec_id)
        except (ShimError, OSError, ProtocolError) as err:
            if attachment is not None:
                attachment.close()
            record.exit_code = start_failure_exit_code(record.cmd[0], str(err))
            record.done.set()
            raise StartFailed(f"OCI runtime exec failed: {err}") from None
        record.pid, record.running = state.pid, True
        svc.publish(c, "exec_start: " + " ".join(record.cmd), execID=exec_id)
        threading.Thread(target=self._follow, args=(record, shim, c.id), daemon=True,
                         name=f"exec-{exec_id[:12]}").start()
        return attachment

    def _follow(self, record: ExecRecord, shim: ShimClient, cid: str) -> None:
        code = 255
        with contextlib.suppress(ShimError, OSError, ProtocolError):
            st = shim.wait(record.id, timeout=None)
            code = st.exit_code if st.exit_code is not None else 255
        with contextlib.suppress(ShimError, OSError, ProtocolError):
            shim.delete(record.id)
        record.exit_code, record.running = code, False
        record.done.set()
        c = self.service.store.find(cid)
        if c is not None:
            self.service.publish(c, "exec_die", execID=record.id, exitCode=str(code))

    def resize(self, exec_id: str, height: int, width: int) -> None:
        record = self.get(exec_id)
        c = self.service.get(record.container_id)
        shim = self.service.live(c).shim
        if shim is None or not record.running:
            raise Conflict(f"exec {exec_id} is not running")
        try:
            shim.resize(width, height, exec_id)
        except ShimError as err:
            raise Conflict(err.message) from None

    def wait(self, exec_id: str, timeout: float | None = None) -> int | None:
        record = self.get(exec_id)
        record.done.wait(timeout)
        return record.exit_code

    def forget_container(self, cid: str) -> None:
        with self._lock:
            for eid in [e for e, r in self._execs.items() if r.container_id == cid]:
                del self._execs[eid]
