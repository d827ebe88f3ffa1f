"""pydesk-shim: one process per container, in containerd-shim's role in the seed's stack.

It detaches from whoever started it (own session, child subreaper), runs the OCI runtime by
runc's command line, owns the container's stdio (pipes, or the pty master received on the
console socket), writes the log in Docker's json-file format, records the init's exit status
atomically in its state dir, and serves a control socket for the daemon: state, start, wait,
kill, resize, attach, exec, delete (:mod:`pydeskd.shim.protocol` is the contract,
:mod:`pydeskd.shim.client` its client).

Rules for this package:

- Standard library only, threads rather than asyncio (asyncio costs ~40 ms of import time
  here, measured with ``python -X importtime``): a shim starts for every container.
- One place spawns and reaps children (:mod:`pydeskd.shim.children`): nothing else waits.
- A client must never be able to stall the container: output goes to bounded per-client
  buffers, and a client that falls behind is dropped.
- It must never touch anything outside its state dir, its log and what the runtime does.
"""
