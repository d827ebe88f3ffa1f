"""Host API socket -> guest daemon; rewrites host bind-mount paths to synced guest paths.

Never exposes the guest daemon unauthenticated to the host or the network.
"""
