"""NAT traversal: circuit relay v2 (service and client), reachability, DCUtR hole punching.

`RelayManager` (manager.py) is what the node holds; `node.relay_status()` is its snapshot.
"""

from punch_net.relay.manager import RelayManager, RelayStatus
from punch_net.relay.outcomes import HolePunchRecord, Outcome

__all__ = ["HolePunchRecord", "Outcome", "RelayManager", "RelayStatus"]
