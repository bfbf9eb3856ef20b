"""py-libp2p's `find_providers` runs two lookups in lock-step batches and is all-or-nothing.

Bug: `ProviderStore.find_providers` runs a full FIND_NODE lookup to convergence, then asks
the closest peers for providers in lock-step batches of α, each batch waiting for its
slowest peer, and returns nothing until it ends. Fix: one GET_PROVIDERS walk (as
go-libp2p's FindProvidersAsync) with α queries in flight, ending at `count` providers,
handing each provider out as it is named and keeping what it found when `timeout` ends it.
Needs `kad_provider_query` (closer peers' addresses). Per DHT (`install`).
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/provider_store.py#L343;
no upstream issue found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def install(dht: Any, walk: Callable[[Any], Any]) -> None:
    """`walk(dht)` builds the replacement: the walk is ours (punch_net/dht/walk.py), this is
    only where it takes py-libp2p's place."""
    dht.provider_store.find_providers = walk(dht)
