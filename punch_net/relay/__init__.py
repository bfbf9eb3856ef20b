"""NAT traversal: circuit relay v2 (service and client), reachability, DCUtR hole punching.

`manager.RelayManager` is the relay component a node runs; `status.RelayStatus` its snapshot.
"""
