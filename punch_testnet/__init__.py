"""`punch testnet`: N node processes on 127.0.0.1, driven through their control channel."""
