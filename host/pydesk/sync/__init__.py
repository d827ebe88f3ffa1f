"""Bind-mount file sync, host <-> guest (watchdog on the host, inotify in the guest).

Never loses data silently: conflicts follow one documented rule.
"""
