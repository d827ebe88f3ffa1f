"""Issue 7's desktop scenario, shared by the passthrough (native) and the VM acceptance tests.

``pydesk run -d -p PORT:80 -v SITE:/www busybox httpd -f -p 80 -h /www``; then, from the host:
the host's file is served at http://localhost:PORT, a host edit is served within 1 s, a file the
container writes into /www appears on the host, and headless Chromium renders the page (its
script rewrites the heading, so the test sees what a browser rendered, not the raw file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = "chromium-headless-shell"
RENDERED = "rendered by the browser"
PAGE = ("<html><body><h1 id=title>{text}</h1>"
        "<script>document.getElementById('title').textContent = '" + RENDERED +
        " from ' + document.getElementById('title').textContent</script></body></html>\n")

RunPydesk = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Measured:
    container: str
    edit_seconds: float
    """Host write -> the new content served through the published port."""
    back_seconds: float
    """Container write -> the file on the host."""


def fetch(url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return str(answer.read().decode())
    except (OSError, urllib.error.URLError):
        return None


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until ``condition()`` held; raises AssertionError after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true after {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def render(url: str) -> str:
    """The DOM headless Chromium rendered (after scripts ran)."""
    chromium = shutil.which(CHROMIUM)
    assert chromium, f"{CHROMIUM} is not installed (scripts/setup installs it)"
    done = subprocess.run([chromium, "--no-sandbox", "--disable-gpu", "--headless",
                           "--timeout=20000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout


def run_site_scenario(pydesk: RunPydesk, site: Path, port: int, image: str, *,
                      edit_timeout: float = 1.0, start_timeout: float = 60.0) -> Measured:
    """Runs the scenario with ``pydesk(*args)`` (the CLI against the engine under test) and
    asserts every step; returns the container's id and the measured latencies."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text(PAGE.format(text="version one"))
    container = pydesk("run", "-d", "-p", f"{port}:80", "-v", f"{site}:/www", image,
                       "httpd", "-f", "-p", "80", "-h", "/www").stdout.strip()
    url = f"http://localhost:{port}/index.html"
    wait_for(lambda: "version one" in (fetch(url) or ""), start_timeout, step=0.2)

    (site / "index.html").write_text(PAGE.format(text="version two"))
    edit = wait_for(lambda: "version two" in (fetch(url) or ""), 30)
    assert edit <= edit_timeout, f"the edit was served after {edit:.2f} s (at most {edit_timeout})"

    started = time.monotonic()
    pydesk("exec", container, "sh", "-c", "echo written in the container > /www/from-ctr.txt")
    wait_for(lambda: (site / "from-ctr.txt").exists()
             and (site / "from-ctr.txt").read_text() == "written in the container\n", 30)
    back = time.monotonic() - started

    dom = render(f"http://localhost:{port}/")
    assert f"{RENDERED} from version two" in dom, dom[-2000:]
    return Measured(container, edit, back)


TESTCONTAINERS_SCRIPT = """
import sys
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy
import urllib.request

command = ["sh", "-c", "mkdir /www && echo served-by-testcontainers > /www/index.html"
           " && exec httpd -f -p 80 -h /www"]
with DockerContainer(sys.argv[1]).with_command(command).with_exposed_ports(80).waiting_for(
        HttpWaitStrategy(80).for_status_code(200)) as web:
    url = f"http://{web.get_container_host_ip()}:{web.get_exposed_port(80)}/index.html"
    print(urllib.request.urlopen(url, timeout=10).read().decode(), end="")
"""


def run_testcontainers(python: str, docker_host: str, image: str) -> str:
    """A Testcontainers container (busybox httpd, HTTP wait strategy) against ``docker_host``,
    in a child interpreter so Testcontainers reads DOCKER_HOST fresh; what the page served.
    Ryuk (the reaper) is off: its image cannot be pulled here, and the container is removed by
    the ``with`` block."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    # This test machine is itself a container (/.dockerenv): Testcontainers would then reach
    # published ports through the default gateway, where a desktop engine (ports on the host's
    # 127.0.0.1, as Docker Desktop) does not listen. A developer's Mac is not a container: the
    # mode it would choose there is docker_host (localhost for a unix socket).
    env.update(DOCKER_HOST=docker_host, TESTCONTAINERS_RYUK_DISABLED="true",
               TESTCONTAINERS_CONNECTION_MODE="docker_host")
    done = subprocess.run([python, "-c", TESTCONTAINERS_SCRIPT, image], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
