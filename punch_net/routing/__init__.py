"""Choosing peers: weighted selection, reputation, capabilities, the connection manager."""
