"""How others reach this node: observed public addresses (observed.py, sans-IO, and the
component in service.py), NAT-PMP / UPnP IGD port mapping (portmap.py) and LAN discovery
(mdns.py). What is finally advertised is decided in punch_net/p2p/addresses.py."""
