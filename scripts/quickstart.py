"""The quickstart's container: a busybox bundle run natively through pydesk-shim and pydesk-runc.

Until the image store exists (the "Images" issue), the root filesystem is built from the host's
busybox-static instead of pulled. Run by scripts/quickstart, as root.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pydeskd.shim.client import ShimStartError, start_shim
from tests.support.busybox import make_bundle, write_config

SCRIPT = (
    "echo \"hello from $(hostname), pid $$ in its own pid namespace\"; "
    "echo \"root filesystem: $(ls /bin | wc -l) busybox applets\"; "
    "echo \"memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
    " || cat /sys/fs/cgroup/memory.max)\"; "
    "exit 3"
)


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("quickstart: run as root (containers need namespaces, mounts and cgroups)")
    work = Path(tempfile.mkdtemp(prefix="pydesk-quickstart-"))
    cid = f"quickstart-{os.getpid()}"
    config = make_bundle(work / "bundle", ["sh", "-c", SCRIPT], cgroups_path=f"/pydesk/{cid}")
    config["linux"]["resources"]["memory"] = {"limit": 64 << 20}
    config["hostname"] = "quickstart"
    write_config(work / "bundle", config)
    try:
        started = time.perf_counter()
        shim = start_shim(cid, work / "bundle", work / "shim", runtime_root=work / "runc")
        with shim.attach() as stream:
            shim.start()
            out, err = stream.read_all()
        state = shim.wait()
        elapsed = time.perf_counter() - started
        sys.stdout.write(out.decode() + err.decode())
        print(f"container {cid} exited with {state.exit_code} in {elapsed * 1000:.0f} ms "
              f"(shim: {shim.path})")
        shim.delete()
        return 0 if state.exit_code == 3 else 1
    except ShimStartError as exc:
        print(f"quickstart: the container did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
