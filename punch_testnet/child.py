"""`python -m punch_testnet.child ROLE ...`: `punch ROLE ...` with the testnet agent
(what `punch testnet` starts when it cannot fork from the zygote)."""

import sys

from punch_net.cli.main import main
from punch_testnet import agent

if __name__ == "__main__":
    sys.exit(main(extend=agent.compose))
