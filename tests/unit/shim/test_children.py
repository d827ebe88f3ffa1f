"""The shim's one reaper: spawned children's statuses are never stolen, reparented orphans are
claimed by pid (even when they died first), and codes follow the shell (128 + signal).

Each case runs in a fresh interpreter: a reaper calls waitpid(-1) and sets the child subreaper
flag, which must not touch the test runner's own children.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pydeskd.shim.children import exit_code

PRELUDE = """
import os, sys, threading, time, subprocess
from pydeskd.shim.children import Children
from pydeskd.runtime.syscalls import LinuxSyscalls
LinuxSyscalls().prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
children = Children()
children.start()
"""


# Prints the pid of a child that it leaves behind (never reaps), which exits with CODE after
# DELAY seconds: an orphan for the subreaper. (A shell may reap its background jobs itself.)
ORPHAN = """
import os, sys, time
pid = os.fork()
if pid == 0:
    os.close(1)  # the caller reads our parent's output to EOF, not ours
    os.close(2)
    time.sleep(float(sys.argv[2]))
    os._exit(int(sys.argv[1]))
print(pid)
"""


def _run(body: str) -> str:
    script = PRELUDE + f"ORPHAN = {ORPHAN!r}\n" + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_exit_code_convention() -> None:
    assert exit_code(3 << 8) == 3
    assert exit_code(9) == 137
    assert exit_code(15) == 143


def test_spawned_statuses_are_not_stolen() -> None:
    out = _run("""
        results = []
        def worker(n):
            code, output = children.run(["sh", "-c", f"echo {n}; exit {n % 5}"])
            results.append((n, code, output))
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(40)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert sorted(results) == [(n, n % 5, f"{n}\\n".encode()) for n in range(40)], results
        p = children.spawn(["sh", "-c", "kill -9 $$"])
        assert children.wait(p, 10) == 137 and p.returncode == 137
        p = children.spawn(["sleep", "5"])
        try:
            children.wait(p, 0.2)
        except TimeoutError:
            print("timeout ok")
        p.kill()
        assert children.wait(p, 10) == 137
        print("ok")
    """)
    assert out.split() == ["timeout", "ok", "ok"]


def test_reparented_orphans_are_claimed() -> None:
    out = _run("""
        got = {}
        done = threading.Event()
        def claim(name):
            def on_exit(code):
                got[name] = code
                if len(got) == 2: done.set()
            return on_exit
        since = time.monotonic()
        # Orphans: their parent (sh) exits at once, so they are reparented to us.
        late = int(children.run([sys.executable, "-c", ORPHAN, "4", "0.5"])[1])
        assert os.path.exists(f"/proc/{late}")  # watched below while still running
        # Dead (and reaped as unclaimed) before anyone watches it.
        early = int(children.run([sys.executable, "-c", ORPHAN, "6", "0"])[1])
        time.sleep(0.3)
        children.watch(late, claim("late"), since)
        children.watch(early, claim("early"), since)
        assert done.wait(10), got
        print(got["late"], got["early"])
    """)
    assert out.split() == ["4", "6"]


def test_stale_unclaimed_status_is_not_handed_to_a_newer_process() -> None:
    out = _run("""
        before = time.monotonic()
        pids = [int(children.run([sys.executable, "-c", ORPHAN, "6", "0"])[1])
                for _ in range(2)]
        time.sleep(0.3)
        got = {0: [], 1: []}
        children.watch(pids[0], got[0].append, before)  # reaped after `before`: handed over
        # Watching "since now": the status reaped earlier belongs to an older process.
        children.watch(pids[1], got[1].append, time.monotonic())
        time.sleep(0.3)
        print(got[0], got[1])
    """)
    assert out.split() == ["[6]", "[]"]


@pytest.mark.parametrize("status, code", [(0, 0), (1 << 8, 1), (2, 130)])
def test_exit_codes(status: int, code: int) -> None:
    assert exit_code(status) == code


def test_a_child_that_overstays_is_killed() -> None:
    out = _run("""
        p = children.spawn(["sleep", "30"])
        try:
            children.finish(p, 0.3)
        except TimeoutError:
            print("timeout")
        assert p.returncode == 137 and not os.path.exists(f"/proc/{p.pid}"), p.returncode
        began = time.monotonic()
        try:
            children.run(["sh", "-c", "echo out; exec sleep 30"], timeout=0.3)
        except TimeoutError:
            print("timeout")
        assert time.monotonic() - began < 5
        print(*children.run(["sh", "-c", "echo still fine"]))
    """)
    assert out.split() == ["timeout", "timeout", "0", "b'still", "fine\\n'"]


def test_an_adopted_child_is_waited_for_and_killed_like_a_spawned_one() -> None:
    script = textwrap.dedent("""
        import os
        from pydeskd.shim.children import Children
        children = Children()
        quick = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 7"], os.environ)
        slow = os.posix_spawn("/bin/sleep", ["sleep", "30"], os.environ)
        a, b = children.adopt(quick, ["sh"]), children.adopt(slow, ["sleep", "30"])
        children.start()
        assert children.wait(a, 10) == 7 and a.returncode == 7
        try:
            children.finish(b, 0.2)
        except TimeoutError:
            pass
        assert b.returncode == 137  # killed, and reaped by the reaper
        b.kill()  # reaped: never signalled again
        try:
            children.adopt(os.getpid(), ["x"])
        except RuntimeError as e:
            print("refused:", e)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "refused: adopt() after start()" in done.stdout
