"""The real Docker Engine (Debian's docker.io), started privately as a reference.

Benchmarks and compatibility checks compare pydesk with it; pydesk never depends on it. Each
`DockerEngine` runs its own dockerd (and the containerd it spawns) with a private data root, exec
root and socket under a temporary directory, without touching the host's network (no bridge, no
iptables rules), and removes everything when it stops: processes, mounts, files.

    with DockerEngine(mirrors=["http://127.0.0.1:5000"]) as engine:
        engine.docker("pull", "bench/big")

``network=True`` (opt-in, for bench/net) runs it as installed instead: its bridge ``docker0`` on a
free /24, iptables NAT and published ports (DNAT plus docker-proxy). One such engine at a time
(``docker0`` is one name). Stopping it also removes the bridge, every iptables rule and chain it
made, and puts back the sysctls it may change (ip_forward, bridge-nf-call-*) and the FORWARD
policy.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


class DockerEngine:
    def __init__(self, mirrors: Sequence[str] = (), insecure: Sequence[str] = (),
                 root: Path | None = None, network: bool = False) -> None:
        # A short base path: dockerd's socket path must fit in sun_path (108 bytes).
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="pydesk-dockerd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        # Containers go under a cgroup parent of this engine's own, removed when it stops.
        self.cgroup_parent = f"/{self.root.name}"
        self.config = {"registry-mirrors": list(mirrors), "insecure-registries": list(insecure),
                       "iptables": False, "ip-masq": False, "bridge": "none",
                       "storage-driver": "overlay2", "cgroup-parent": self.cgroup_parent}
        self._proc: subprocess.Popen[bytes] | None = None
        self.network = network
        self.subnet: ipaddress.IPv4Network | None = None
        self._saved_sysctls: dict[Path, str] = {}
        self._saved_forward_policy: str | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60) -> None:
        if self.network:
            self._prepare_network()
        config = self.root / "daemon.json"
        config.write_text(json.dumps(self.config))
        log = (self.root / "dockerd.log").open("ab")
        self._proc = subprocess.Popen(
            [DOCKERD, "--config-file", str(config), "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid"),
             "-H", self.host],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self._proc.returncode}): {self.log_tail()}")
            if self.socket.exists() and subprocess.run(
                    [DOCKER, "-H", self.host, "version"], capture_output=True,
                    check=False).returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "dockerd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def docker(self, *args: str, input: bytes | None = None,
               check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([DOCKER, "-H", self.host, *args], input=input,
                                capture_output=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace').strip()}")
        return result

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # SIGTERM to the whole session: dockerd and the containerd it started.
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._proc is not None:
            # containerd (and any shim) may outlive dockerd by a moment.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc = None
        if self.network and self.subnet is not None:
            self._remove_network()
        self._unmount_all()
        self._remove_cgroups()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _prepare_network(self) -> None:
        """Refuses a host that has a Docker network already (it would be ours to remove at the
        end), picks a free /24 for docker0 and notes what dockerd may change."""
        if _link_exists(BRIDGE) or any(chain.startswith("DOCKER") for table in ("filter", "nat")
                                       for chain in _chains(table)):
            raise RuntimeError("a Docker network (docker0 or DOCKER chains) is on this host "
                               "already: only one DockerEngine(network=True) at a time")
        self.subnet = _free_subnet()
        gateway = next(self.subnet.hosts())
        self.config.update({"iptables": True, "ip-masq": True,
                            "bip": f"{gateway}/{self.subnet.prefixlen}"})
        self.config.pop("bridge", None)
        for key in NETWORK_SYSCTLS:
            path = Path("/proc/sys") / key
            with contextlib.suppress(OSError):
                self._saved_sysctls[path] = path.read_text().strip()
        self._saved_forward_policy = _forward_policy()

    def _remove_network(self) -> None:
        """docker0, the rules dockerd put in the built-in chains (they name a DOCKER chain,
        docker0 or its subnet), the DOCKER* chains, and the sysctls and FORWARD policy as
        they were."""
        assert self.subnet is not None
        subnet_prefix = str(self.subnet.network_address).rsplit(".", 1)[0] + "."
        for table in ("filter", "nat"):
            chains = _chains(table)
            for line in _iptables("-t", table, "-S").splitlines():
                words = shlex.split(line)
                if len(words) < 2 or words[0] != "-A" or words[1].startswith("DOCKER"):
                    continue
                if "DOCKER" in line or BRIDGE in words or subnet_prefix in line:
                    _iptables("-t", table, "-D", *words[1:], check=False)
            ours = [c for c in chains if c.startswith("DOCKER")]
            for chain in ours:
                _iptables("-t", table, "-F", chain, check=False)
            for chain in ours:
                _iptables("-t", table, "-X", chain, check=False)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        for path, value in self._saved_sysctls.items():
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value)
        if self._saved_forward_policy and _forward_policy() != self._saved_forward_policy:
            _iptables("-P", "FORWARD", self._saved_forward_policy, check=False)
        self.subnet = None

    def _remove_cgroups(self) -> None:
        """The engine's cgroup parent in every hierarchy, children first (all empty by now)."""
        name = self.cgroup_parent.strip("/")
        for top in Path("/sys/fs/cgroup").glob(f"*/{name}"):
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()),
                                    key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def _unmount_all(self) -> None:
        prefix = str(self.root) + "/"
        with open("/proc/self/mounts") as mounts:
            targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for target in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def __enter__(self) -> DockerEngine:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


BRIDGE = "docker0"
NETWORK_SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables",
                   "net/bridge/bridge-nf-call-ip6tables")


def _iptables(*args: str, check: bool = True) -> str:
    done = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _chains(table: str) -> list[str]:
    return [line.split()[1] for line in _iptables("-t", table, "-S").splitlines()
            if line.startswith("-N ")]


def _forward_policy() -> str | None:
    for line in _iptables("-S", "FORWARD").splitlines():
        if line.startswith("-P FORWARD "):
            return line.split()[2]
    return None


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True,
                          check=False).returncode == 0


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 172.30.0.0/16 that no route or address of the host overlaps."""
    taken = []
    for argv in (["ip", "-4", "-o", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        for word in out.split():
            with contextlib.suppress(ValueError):
                if "/" in word or word[0].isdigit():
                    taken.append(ipaddress.IPv4Network(word, strict=False))
    for candidate in ipaddress.IPv4Network("172.30.0.0/16").subnets(new_prefix=24):
        if not any(candidate.overlaps(net) for net in taken if net.prefixlen > 0):
            return candidate
    raise RuntimeError("no free /24 in 172.30.0.0/16 for docker0")
