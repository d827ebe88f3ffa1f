"""QEMU driver: the command line as a pure function, the accelerator probe, disks, QMP control.

Never starts an accelerator without a probe that has a timeout (KVM can hang).
"""
