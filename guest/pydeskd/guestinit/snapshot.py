"""The snapshot point: where the host may save the whole VM, so later starts resume from it.

What it is for: the guest's boot under TCG is mostly Python importing pydeskd. The init stops at
one point, after the root is mounted, the host's configuration read, the network configured and
pydeskd imported (``preload`` reports it), and asks the host on the control port
(``vmcontract.CTL_PORT_NAME``) whether it wants to save the VM there: it repeats
``CTL_AT_SNAPSHOT_POINT`` until the host sends a go line. The host saves the state (or not) and
sends go, on this boot and again after every resume of that state. The go line carries what must
be fresh after a resume: the host's clock (set with clock_settime) and random bytes (mixed into
the kernel's pool, whose generator is then reseeded: RNDRESEEDCRNG).

What it must never do: run after sshd started, after the data disk was opened (a snapshot must
not cache any of its blocks or a mounted filesystem), or after anything secret or random was
made; or go on without a go line when the control port exists (a late save would then catch
the data disk mounted). Without a control port (a host that does not snapshot), it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydeskd import vmcontract
from pydeskd.guestinit import preload

if TYPE_CHECKING:
    from pydeskd.guestinit.boot import Init

VIRTIO_PORTS = "/sys/class/virtio-ports"
IMPORT_WAIT = 180.0
"""How long the snapshot point waits for pydeskd's import (about 12 s under TCG); past it the
VM is saved without it (a slower resume, nothing worse)."""
ANNOUNCE_INTERVAL = 1.0
POLL = 0.05
LOG_INTERVAL = 30.0


class SnapshotPointError(RuntimeError):
    """The init reached the snapshot point in a state that must never be saved."""


def find_ctl_port(init: Init) -> str | None:
    """/dev/vportNpM of the control port (no udev in the guest: by its name in sysfs)."""
    for port in sorted(init.sys.listdir(VIRTIO_PORTS)):
        try:
            name = init.sys.read(f"{VIRTIO_PORTS}/{port}/name").decode().strip()
        except OSError:
            continue
        if name == vmcontract.CTL_PORT_NAME:
            return "/dev/" + port
    return None


def wait_imported(init: Init, preloaded: preload.Preloaded | None) -> None:
    """Until pydeskd-preload reports its import done (or died, or IMPORT_WAIT passed)."""
    if preloaded is None or preloaded.imported_fd < 0:
        return
    s = init.sys
    deadline = s.monotonic() + IMPORT_WAIT
    while s.monotonic() < deadline and not init.shutdown_requested:
        if preloaded.pid in init.exited:
            return
        if preloaded.imported_fd in init.poll(0.25, (preloaded.imported_fd,)):
            s.read_fd(preloaded.imported_fd)  # the byte, or EOF: either way, done
            return
    s.log(f"pydeskd not imported after {IMPORT_WAIT:.0f}s: snapshot point without it")


def pass_point(init: Init) -> vmcontract.GoLine | None:
    """The snapshot point: announce, wait for the host's go, apply it. Returns the go line, or
    None when there is no control port (or a shutdown was requested while waiting)."""
    s = init.sys
    if init.data_mounted or init.sshd or init.pydeskd:
        raise SnapshotPointError("the snapshot point comes before sshd and the data disk")
    path = find_ctl_port(init)
    if path is None:
        s.log("no control port: no snapshot point")
        return None
    wait_imported(init, init.preloaded)
    try:
        fd = s.open_port(path)
    except OSError as e:
        s.log(f"control port {path}: {e}: no snapshot point")
        return None
    try:
        go = _wait_go(init, fd)
    finally:
        s.close_fd(fd)
    if go is None:
        return None
    try:
        s.set_clock_ns(go.time_ns)
    except OSError as e:
        s.log(f"cannot set the clock: {e}")
    try:
        s.add_entropy(go.entropy)
    except OSError as e:
        s.log(f"cannot reseed the random generator: {e}")
    s.log("go from the host")
    return go


def _wait_go(init: Init, fd: int) -> vmcontract.GoLine | None:
    s = init.sys
    s.log("at the snapshot point")
    announce = (vmcontract.CTL_AT_SNAPSHOT_POINT + "\n").encode()
    next_announce = s.monotonic()
    next_log = s.monotonic() + LOG_INTERVAL
    pending = b""
    while not init.shutdown_requested:
        now = s.monotonic()
        if now >= next_announce:
            # EAGAIN while no host is connected: said again a second later.
            s.write_port(fd, announce)
            next_announce = now + ANNOUNCE_INTERVAL
        if now >= next_log:
            s.log("still waiting for the host's go on the control port")
            next_log = now + LOG_INTERVAL
        pending += s.read_fd(fd)
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            go = vmcontract.GoLine.parse(line)
            if go is not None:
                return go
        pending = pending[-4096:]
        # Not select(): a port without a host polls readable and reads EOF; a short sleep.
        init.poll(POLL)
    return None
