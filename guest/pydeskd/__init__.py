"""pydeskd, the guest side: runs inside the VM, or natively on a Linux host. Linux only."""
