"""Routing upkeep as one node component: the reputation file saved every 30 s (and at
exit), and our capabilities pushed to the peers that asked for them."""

from __future__ import annotations

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.node import Node
from punch_net.routing.capabilities import CapabilityBook, run_announcer
from punch_net.routing.reputation import ReputationStore

SAVE_INTERVAL = 30.0


class RoutingUpkeep:
    def __init__(self, node: Node, reputation: ReputationStore, book: CapabilityBook,
                 announce_interval: float) -> None:
        self.node = node
        self.reputation = reputation
        self.book = book
        self.announce_interval = announce_interval

    def attach(self, host: IHost, dht: KadDHT) -> None:
        pass

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.reputation.load_error:
            self.node.bus.publish(ev.ErrorEvent(message=self.reputation.load_error, where="reputation"))
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._save_periodically)
            nursery.start_soon(run_announcer, self.node, self.book, self.announce_interval)

    async def _save_periodically(self) -> None:
        try:
            while True:
                await trio.sleep(SAVE_INTERVAL)
                self._save()
        finally:
            with trio.CancelScope(shield=True):
                self._save()

    def _save(self) -> None:
        try:
            self.reputation.save()
        except OSError as exc:
            self.node.bus.publish(ev.ErrorEvent(message=f"cannot save reputation: {exc.strerror}",
                                                where="reputation"))
