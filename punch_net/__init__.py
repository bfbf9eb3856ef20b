"""Punch network core: libp2p node roles on trio, with no UI code."""

__version__ = "0.1.0"
AGENT_VERSION = f"punch/{__version__}"
