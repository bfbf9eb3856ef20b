"""`python -m punch_net.cli ROLE ...` (what the testnet and the tests start)."""

from punch_net.cli.entry import run

run()
