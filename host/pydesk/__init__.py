"""pydesk, the host side: what runs on the user's machine (macOS, Windows, Linux).

It boots and drives the guest VM, proxies the Docker API socket, forwards published ports and
syncs bind mounts. It must never import a Linux-only module at module level, and imports from
the guest package only the pure host <-> guest contract.
"""

__version__ = "0.1.0"
