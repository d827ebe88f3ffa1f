"""The guest init: PID 1 of the pydesk VM, in the read-only root, after the initramfs.

What it is for: bring the guest from "kernel + read-only root" to "pydeskd answers /_ping", and
back down cleanly on ACPI power-off. It mounts the API filesystems and cgroup v2, reads the
host's ``GuestConfig`` from fw_cfg, sets the hostname, the network and the SSH keys, prepares and
mounts the data disk (mkfs the first time, fsck and grow afterwards), starts sshd and pydeskd,
prints ``GUEST_SERIAL_READY`` on the console, reaps orphans, and on the power button, SIGTERM or
SIGUSR2 stops everything, unmounts the data disk and powers off.

- ``plan``: pure decisions (configuration parsing, file contents, superblock reading, event
  decoding, the shutdown order) — unit-tested;
- ``system``: the one seam over syscalls, files and child processes;
- ``boot``: the sequence, written against the seam;
- ``snapshot``: the snapshot point, where the host may save the VM for later starts to resume
  (before sshd and the data disk), and the go line that makes clock and randomness fresh;
- ``preload``: pydeskd imported in a process of its own while the init works;
- ``unmount``: the data disk unmounted (or made read-only) at shutdown.

What it must never do: block forever (every wait has a timeout, except the snapshot point's
wait for the host's go, which is the host's to give), import more than it needs
(every import is boot time under TCG), or write anything to the read-only root.
"""
