"""`python -m punch_net.cli ROLE ...` (what the testnet and the tests start)."""

import sys

from punch_net.cli.main import main

sys.exit(main())
