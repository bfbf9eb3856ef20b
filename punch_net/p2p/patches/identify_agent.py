"""Identify drops the peer's agent version and announces us as plain "py-libp2p/…".

Bug: `update_peerstore_from_identify` stores protocols, addrs, key and record, but not
`agent_version`. We wrap that function where basic_host imports it, so the agent lands in
the peerstore under "AgentVersion" (go-libp2p's key), and set our own agent string.
Process-wide; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/identity/update.py#L31;
no upstream issue found (js-libp2p fixed the same in
https://github.com/libp2p/js-libp2p/pull/943).
"""

from __future__ import annotations

from typing import Any

from libp2p.host import basic_host
from libp2p.identity.identify import identify
from libp2p.peer.id import ID

AGENT_KEY = "AgentVersion"
original_update = basic_host.update_peerstore_from_identify


def install(agent: str) -> None:
    identify.AGENT_VERSION = agent  # type: ignore[attr-defined]
    if getattr(basic_host.update_peerstore_from_identify, "_punch_keeps_agent", False):
        return
    original = basic_host.update_peerstore_from_identify

    async def update_and_keep_agent(peerstore: Any, peer_id: ID, msg: Any) -> None:
        await original(peerstore, peer_id, msg)
        if getattr(msg, "agent_version", ""):
            try:
                peerstore.put(peer_id, AGENT_KEY, str(msg.agent_version))
            except Exception:
                pass

    update_and_keep_agent._punch_keeps_agent = True  # type: ignore[attr-defined]
    basic_host.update_peerstore_from_identify = update_and_keep_agent  # type: ignore[assignment]
