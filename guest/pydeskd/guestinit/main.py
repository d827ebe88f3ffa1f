"""``pydesk-init``: the guest init's entry point (PID 1, exec'd by the initramfs).

What it must never do: return. PID 1 exiting panics the kernel; on any unexpected error it logs
and still runs the shutdown sequence, which ends in power-off.
"""

from __future__ import annotations

import os
import sys

from pydeskd.guestinit import preload

MODULES_FILE = "/etc/pydesk/guest-modules"
"""The modules to load in the background, one per line (written by the image build)."""


def guest_modules() -> list[str]:
    try:
        with open(MODULES_FILE) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def main() -> int:
    if os.getpid() != 1:
        sys.stderr.write("pydesk-init: not PID 1: refusing to run\n")
        return 1
    # pydeskd's import is most of the boot: start it before this process imports anything more.
    preloaded = preload.spawn()
    # posix_spawnp searches this process's PATH; the kernel starts PID 1 without one.
    os.environ.update(preload.ENV)
    from pydeskd.guestinit.boot import Init
    from pydeskd.guestinit.system import System

    system = System()
    init = Init(system, preloaded)
    try:
        if init.boot(guest_modules()):
            init.serve()
        else:
            system.log("pydeskd is not ready; waiting for power-off")
            init.serve()
    except BaseException as e:  # PID 1 must reach power-off, whatever happened
        system.log(f"init failed: {type(e).__name__}: {e}")
    try:
        init.shutdown()
    finally:
        system.power_off()
    return 0


if __name__ == "__main__":
    sys.exit(main())
