"""Container networking: bridges, IPAM, NAT, published ports, container DNS."""
