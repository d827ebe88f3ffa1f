"""The dockerd layer, objects: containers, networks, volumes, events; config -> OCI spec."""
