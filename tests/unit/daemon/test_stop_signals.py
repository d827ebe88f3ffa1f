"""pydeskd stops on SIGTERM/SIGINT, and only on its own: a forked child that is sent SIGTERM
(pyroute2 stops its netns helpers so) must not stop the daemon through the shared asyncio
signal wakeup fd. Run in a subprocess: the test installs real signal handlers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import asyncio, os, signal, sys, time
    from pydeskd.daemon.main import install_stop_signals

    async def main(fix):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if fix:
            install_stop_signals(loop, stop)
        else:
            for s in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(s, stop.set)
        pid = os.fork()
        if pid == 0:
            time.sleep(5)  # a helper that is stopped by its parent
            os._exit(0)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        child_killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
            stopped = True
        except TimeoutError:
            stopped = False
        print(f"child_killed={child_killed} daemon_stopped={stopped}")
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own SIGTERM still stops it
        await asyncio.wait_for(stop.wait(), 5)
        print("own_sigterm_stops=True")

    asyncio.run(main(sys.argv[1] == "fix"))
""")


def _run(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_forked_childs_sigterm_does_not_stop_the_daemon() -> None:
    assert _run("fix").split() == ["child_killed=True", "daemon_stopped=False",
                                   "own_sigterm_stops=True"]


def test_without_the_hook_the_childs_sigterm_would_stop_it() -> None:
    """The hazard is real: asyncio's handlers alone let the child's signal through."""
    assert "daemon_stopped=True" in _run("plain")
