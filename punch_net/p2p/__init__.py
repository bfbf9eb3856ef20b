"""Host construction, identity, addresses; py-libp2p patches in punch_net/p2p/patches/."""
