"""Port forwarder: published container ports appear on the host's localhost."""
