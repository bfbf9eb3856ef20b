"""`host.get_addrs()` turns a `/p2p-circuit` address into a lie pointing at the relay.

Bug: `BasicHost.get_addrs()` strips an address's *first* `/p2p/` value and appends ours, so
`/ip4/R/tcp/N/p2p/<relay>/p2p-circuit` from an addrs factory comes out as
`/ip4/R/tcp/N/p2p/<us>`. Circuit addresses have to be appended after that step; identify,
provider records and FIND_NODE answers read `host.get_addrs()` at call time. Per host.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/host/basic_host.py#L492; no upstream issue found.
"""

from __future__ import annotations

from collections.abc import Callable

import multiaddr
from libp2p.abc import IHost


def advertise_extra_addrs(host: IHost, extra: Callable[[], list[str]]) -> None:
    """Make `host.get_addrs()` also return `extra()` (each ending in `/p2p/<us>`)."""
    original = host.get_addrs

    def get_addrs() -> list[multiaddr.Multiaddr]:
        addrs = list(original())
        texts = extra()
        if not texts:  # no reservation (most nodes): no str() of every address
            return addrs
        seen = {str(a) for a in addrs}
        for text in texts:
            if text not in seen:
                try:
                    addrs.append(multiaddr.Multiaddr(text))
                except Exception:
                    continue
                seen.add(text)
        return addrs

    host.get_addrs = get_addrs  # type: ignore[method-assign]
