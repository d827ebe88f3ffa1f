"""Issue 7's port forwarding in a real VM: the forwarder follows the guest daemon through the SSH
channel and adds QEMU hostfwd rules through QMP; a container's published port answers on the
host's 127.0.0.1 (busybox httpd), and goes away with the container. One boot."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

from pydesk.forward.backend import QemuUserNetBackend
from pydesk.forward.desired import Forward, Proto
from pydesk.forward.follower import PortForwarder
from pydesk.forward.state import load_state
from tests.support.registry import Registry
from tests.vm.vmdriver import VmDriver

PAGE = "hello from the guest"
HTTPD = f"mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p 80 -h /www"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def test_published_port_answers_on_the_host(vm: VmDriver, registry: Registry,
                                            tmp_path: Path) -> None:
    guest_registry = "10.0.2.2:" + registry.host.rsplit(":", 1)[1]
    vm.cli("vm", "start", "--disk-size", "4G", "--memory", "1G", "--daemon-json",
           json.dumps({"insecure-registries": [guest_registry]}))
    ssh_port = int(json.loads(vm.files.runtime.read_text())["ssh_port"])
    ssh_rule = Forward(Proto.TCP, "127.0.0.1", ssh_port, 22)
    backend = QemuUserNetBackend(vm.files.qmp_socket)
    assert ssh_rule in backend.list()
    port = free_port()
    with vm.channel() as chan:
        ref = f"{guest_registry}/test/single:latest"
        status, body = chan.request("POST", f"/images/create?fromImage={ref}", b"", timeout=180)
        assert status == 200 and b'"error"' not in body, body[-500:]
        reports: list[tuple[str, str]] = []
        state_file = tmp_path / "forwards.json"
        forwarder = PortForwarder(chan.open_unix, backend, state_file,
                                  lambda m, e: reports.append((m, e)))
        stop = threading.Event()
        thread = threading.Thread(target=forwarder.run, args=(stop,))
        thread.start()
        try:
            assert forwarder.connected.wait(30), reports
            spec = {"Image": ref, "Cmd": ["sh", "-c", HTTPD],
                    "ExposedPorts": {"80/tcp": {}},
                    "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": str(port)}]}}}
            status, body = chan.request("POST", "/containers/create?name=web",
                                        json.dumps(spec).encode())
            assert status == 201, body
            cid = json.loads(body)["Id"]
            status, body = chan.request("POST", f"/containers/{cid}/start", b"")
            assert status == 204, body
            started = time.monotonic()
            web = Forward(Proto.TCP, "127.0.0.1", port, port)
            while web not in backend.list():
                assert time.monotonic() - started < 5, (reports, vm.diagnostics())
                time.sleep(0.05)
            print(f"forward present {time.monotonic() - started:.2f}s after start returned")
            deadline = time.monotonic() + 20  # httpd starting under TCG
            while True:
                try:
                    assert get(f"http://127.0.0.1:{port}/index.html").strip() == PAGE
                    break
                except OSError:
                    assert time.monotonic() < deadline, vm.diagnostics()
                    time.sleep(0.2)
            status, body = chan.request("POST", f"/containers/{cid}/stop?t=0", b"",
                                        timeout=60)
            assert status == 204, body
            deadline = time.monotonic() + 5
            while web in backend.list():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            try:
                get(f"http://127.0.0.1:{port}/", timeout=2)
                raise AssertionError("the port still answers after the container stopped")
            except OSError:
                pass
            assert load_state(state_file).made == frozenset()
            assert reports == []
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()
        assert ssh_rule in backend.list()  # the agent's forward was never touched
        assert chan.ping()
    vm.cli("vm", "stop")
