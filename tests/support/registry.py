"""A real registry (Debian's ``docker-registry``, distribution 2.8) on 127.0.0.1, for tests.

What it is for: pulls and pushes are tested against the registry Docker users meet, not a fake.
``Registry`` writes a config (filesystem storage in its work directory, deletes enabled, log level
warn into ``registry.log``), starts ``docker-registry serve`` on a free port, and waits until
``/v2/`` answers. Modes: anonymous; ``htpasswd=(user, password)`` (Basic, bcrypt); ``token=``
a started :class:`TokenServer` (Bearer challenge flow). ``stop()`` / ``start()`` keep the port and
the storage, to simulate a registry that goes away in the middle of a pull and comes back.

``push_layout`` pushes an OCI layout with ``skopeo copy --all --preserve-digests`` and checks with
``skopeo inspect --raw`` that the registry serves the layout's manifest bytes (same digest):
a test built on a silently converted image would prove nothing.

What it must never do: listen on anything but 127.0.0.1, read the user's registry credentials
(skopeo gets an empty auth file and explicit ``--creds``/``--no-creds``), or leave a process
behind (``stop`` kills it; the context manager always stops).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from pydeskd.containerd.oci import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, Index
from tests.support.images import ImageLayout
from tests.support.token_server import TokenServer

DOCKER_REGISTRY = "/usr/bin/docker-registry"
SKOPEO = "skopeo"


class ToolError(RuntimeError):
    """A helper program failed; the message has its command line and output."""


def run_tool(argv: list[str], *, timeout: float = 300,
             input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Runs ``argv``; raises ``ToolError`` with the command line and stderr on failure."""
    try:
        result = subprocess.run(argv, capture_output=True, timeout=timeout, input=input,
                                check=False)
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"timed out after {timeout}s: {shlex.join(argv)}") from e
    if result.returncode != 0:
        raise ToolError(f"exit {result.returncode}: {shlex.join(argv)}\n"
                        f"{result.stderr.decode(errors='replace').strip()}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def skopeo_auth_args(workdir: Path, prefix: str, creds: tuple[str, str] | None) -> list[str]:
    """``--{prefix}creds``/``--{prefix}no-creds`` plus an empty auth file (never ~/.docker)."""
    authfile = workdir / "skopeo-auth.json"
    if not authfile.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        authfile.write_text('{"auths": {}}')
    args = [f"--{prefix}authfile", str(authfile)]
    args += [f"--{prefix}creds", f"{creds[0]}:{creds[1]}"] if creds else [f"--{prefix}no-creds"]
    return args


def dir_transport_copy(layout: ImageLayout, tag: str, dest: Path) -> Path:
    """``tag`` of ``layout`` as a skopeo ``dir:`` directory (format 1.1): manifest.json holds
    the top manifest's bytes, ``<hex>.manifest.json`` each manifest of an index, blobs by hex."""
    dest.mkdir(parents=True)
    (dest / "version").write_text("Directory Transport Version: 1.1\n")
    top = layout.resolve(tag)
    (dest / "manifest.json").write_bytes(layout.read_blob(top.digest))
    children = []
    if top.media_type in (DOCKER_MANIFEST_LIST, OCI_INDEX):
        children = list(Index.parse(layout.read_blob(top.digest)).manifests)
    for child in children:
        (dest / f"{child.digest[7:]}.manifest.json").write_bytes(layout.read_blob(child.digest))
    for blob in (layout.root / "blobs" / "sha256").iterdir():
        os.link(blob, dest / blob.name)
    return dest


# Gorilla's combined log format: 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 401 87 "" "agent"
_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) ')


@dataclass(frozen=True)
class Access:
    method: str
    path: str  # with the query string
    status: int


@dataclass(frozen=True)
class PushedImage:
    ref: str  # "127.0.0.1:PORT/test/single:latest"
    repository: str  # "test/single"
    tag: str
    digest: str  # of the manifest or index `ref` names (same as in the layout)
    layout: Path


class Registry:
    def __init__(self, workdir: Path, *, htpasswd: tuple[str, str] | None = None,
                 token: TokenServer | None = None, port: int | None = None) -> None:
        if htpasswd and token:
            raise ValueError("a registry has one auth mode: htpasswd or token")
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.config_path = workdir / "config.yml"
        self.log_path = workdir / "registry.log"
        self.access_log_path = workdir / "access.log"  # the registry writes it on stdout
        # The (user, password) this registry accepts: the htpasswd user or the token server's.
        self.credentials = htpasswd or (next(iter(token.users.items())) if token and token.users
                                        else None)
        self.token_server = token
        self.port = port or free_port()
        self.pushed: dict[str, PushedImage] = {}  # by "repository:tag"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, name: str) -> str:
        """``test/single:latest`` -> ``127.0.0.1:PORT/test/single:latest``."""
        return f"{self.host}/{name}"

    # -- lifecycle

    def _write_config(self) -> None:
        auth = ""
        if self.credentials and not self.token_server:
            line = run_tool(["htpasswd", "-Bbn", *self.credentials]).stdout.decode().strip()
            (self.workdir / "htpasswd").write_text(line + "\n")
            auth = (f"auth:\n  htpasswd:\n    realm: pydesk-test\n"
                    f"    path: {self.workdir / 'htpasswd'}\n")
        elif self.token_server:
            ts = self.token_server
            auth = (f"auth:\n  token:\n    realm: {ts.realm}\n    service: {ts.service}\n"
                    f"    issuer: {ts.issuer}\n    rootcertbundle: {ts.cert_path}\n")
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: pydesk-test-secret\n" + auth)

    def start(self, timeout: float = 20) -> Self:
        """Starts (or restarts, same port and storage) and waits until ``/v2/`` answers."""
        if self._process is not None:
            raise RuntimeError("registry already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        self._write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log_path.open("ab") as log, self.access_log_path.open("ab") as access:
            self._process = subprocess.Popen(
                # setpriv: SIGKILL the registry if the test process dies without cleaning up.
                ["setpriv", "--pdeathsig", "KILL", "--", DOCKER_REGISTRY, "serve",
                 str(self.config_path)], stdin=subprocess.DEVNULL,
                stdout=access, stderr=log, env=env, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ToolError(f"docker-registry exited {self._process.returncode}:\n"
                                f"{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2):
                    return
            except urllib.error.HTTPError as e:
                if e.code == 401:  # auth on: it is serving
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ToolError(f"docker-registry not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        """Stops the process (SIGKILL right away if ``kill``); storage and port are kept."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def access_log(self) -> list[Access]:
        """Every request served so far (across restarts), oldest first. Tests count, e.g.,
        blob GETs: ``[a for a in reg.access_log() if a.method == "GET" and "/blobs/" in a.path]``.
        Lines are written when a response completes, so a request still streaming is missing."""
        try:
            text = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [Access(m["method"], m["path"], int(m["status"]))
                for m in map(_ACCESS_LINE.search, text.splitlines()) if m]

    # -- content

    def push_layout(self, layout: Path, dest: str, *, tag: str = "latest",
                    creds: tuple[str, str] | None = None) -> PushedImage:
        """Pushes ``layout``'s ``tag`` (an image or a whole index) as ``dest`` (repo:tag)
        with digests preserved; raises ``ToolError`` if the registry's digest differs."""
        image = ImageLayout(layout, create=False)
        top = image.resolve(tag)
        expected = top.digest
        ref = self.ref(dest)
        with contextlib.ExitStack() as stack:
            source = f"oci:{layout}:{tag}"
            if top.media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
                # skopeo's oci: transport ignores index.json entries of Docker media types;
                # its dir: transport takes any manifest as is.
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=self.workdir)))
                source = "dir:" + str(dir_transport_copy(image, tag, tmp / "dir"))
            run_tool([SKOPEO, "--insecure-policy", "copy", "--all", "--preserve-digests",
                      "--dest-tls-verify=false",
                      *skopeo_auth_args(self.workdir, "dest-", creds), source,
                      f"docker://{ref}"])
        actual = self.manifest_digest(dest, creds)
        if actual != expected:
            raise ToolError(f"skopeo changed the image while pushing {layout}:{tag} to {ref}:"
                            f" the layout has {expected}, the registry serves {actual}")
        repository, _, dest_tag = dest.rpartition(":")
        pushed = PushedImage(ref, repository, dest_tag, expected, layout)
        self.pushed[dest] = pushed
        return pushed

    def raw_manifest(self, name: str, creds: tuple[str, str] | None = None) -> bytes:
        """The bytes the registry serves for ``name`` (``repo:tag`` or ``repo@digest``)."""
        return run_tool([SKOPEO, "--insecure-policy", "inspect", "--raw", "--tls-verify=false",
                         *skopeo_auth_args(self.workdir, "", creds),
                         f"docker://{self.ref(name)}"]).stdout

    def manifest_digest(self, name: str, creds: tuple[str, str] | None = None) -> str:
        return "sha256:" + hashlib.sha256(self.raw_manifest(name, creds)).hexdigest()
