"""The `punch` executable: stub py-libp2p's unused transports, run the CLI, exit at once.

`libp2p/__init__.py` imports every transport and service of the library (QUIC, TLS/ACME,
WebSocket, WebRTC, mDNS, UPnP, DNS, ...): 0.4-0.6 s of a ~0.9 s start on this machine, none
of it used by a TCP + Noise + Yamux node. The import guard (punch_net/p2p/import_guard.py,
also used by the testnet fork server) must be installed before anything imports libp2p,
hence this module, which imports nothing else first. PUNCH_IMPORT_GUARD=0 turns it off.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from typing import NoReturn


def main(argv: Sequence[str] | None = None) -> int:
    # No garbage collection while ~900 modules load (they make no garbage, and a full pass
    # over their objects cost ~20-30 ms of CPU at every start); then freeze those objects,
    # which live as long as the process, so later collections do not walk them again.
    gc.disable()
    cache = None
    try:
        from punch_net.cli import codecache
        from punch_net.p2p import import_guard

        if codecache.wanted():
            cache = codecache.install()

        if import_guard.wanted() and import_guard.installed() is None:
            try:
                import_guard.install()
            except RuntimeError:  # libp2p already imported (an embedding program): nothing to save
                pass
        from punch_net.cli.main import main as cli_main
    finally:
        gc.freeze()
        gc.enable()
    if cache is not None:
        cache.save()  # the dataclasses of the imports; later ones are compiled as usual
        codecache.uninstall()
    return cli_main(argv)


def run() -> NoReturn:
    """`punch` and `python -m punch_net.cli`: main(), then leave without tearing down the
    interpreter. The node has stopped and its files are closed; unloading ~1,000 modules
    and collecting their objects took 0.1-0.2 s after a download's `complete`."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
