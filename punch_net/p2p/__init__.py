"""Host construction, identity, addresses and py-libp2p workarounds."""
