"""pydesk-runc: the low-level OCI runtime (runc's role in the seed's stack).

It reads an OCI bundle (``config.json`` + root filesystem), creates the namespaces, mounts and
cgroups it describes, starts the container's process and exits, leaving the process to whoever
started it (the shim, a child subreaper). Its command line is runc's, so runc and crun can be
used in its place and it can be used in theirs.

Rules for this package:

- Standard library plus ctypes (and libseccomp through ctypes) only: it starts for every
  container, so every import is paid on every ``docker run``. Heavy modules are imported only
  by the subcommands that need them.
- Every syscall goes through :mod:`pydeskd.runtime.syscalls` (one seam), so the plans that
  decide what to mount, which namespaces to enter and which cgroup files to write are tested
  without root, and the seam itself is tested for real as root.
- It must never touch the host outside the container's own state directory, its cgroup and the
  paths named by the bundle: every path from ``config.json`` is resolved inside the root
  filesystem, and bad input is rejected before anything is created.
"""
