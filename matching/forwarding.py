"""Tasks between matching nodes (docs/cluster.md, "Matching").

With several matching nodes, a task sits on the node that read its Kafka partition, and a poll
reaches the node its frontend sent it to (round robin). Most tasks meet a poll on their own
node. The rest, as in Temporal's task-queue partitions, move: a task that waited
`forward_after_ms` on a queue with no poll waiting on its node is offered to the other nodes,
and one of them hands it to a poll waiting there (after history recorded it started, with the
same request id). So no task waits on a node that no poller reaches, while the common case costs
no extra hop.

* `Offered` is a task another node offered, on its way to a local poll: it is "taken" once
  handed out (or found stale by history); if the handout fails it bounces back to the offering
  node (`taken` False), which keeps it.
* `Forwarder` (one per node, only in a cluster) makes the offers. A node that had no poll for a
  queue is not asked about it again for `forward_backoff_ms`; one that reports waiting polls is
  given up to that many tasks at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from legato import api
from legato.config import MatchingConfig
from matching.queues import Key, Queued, TaskQueues

log = logging.getLogger("legato.matching.forwarding")

PeerList = Callable[[], list[tuple[str, api.MatchingPeer]]]  # (identity, peer) of the other nodes


class Offered(Queued):
    """A task offered by another node; `outcome` resolves True (taken) or False (bounced)."""

    __slots__ = ("outcome",)

    def __init__(self, task: api.TaskInfo, since: float, request_id: str) -> None:
        super().__init__(task, since)
        self.request_id = request_id
        self.outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def live(self) -> bool:
        return not self.outcome.done()

    def settle(self) -> None:
        if not self.outcome.done():
            self.outcome.set_result(True)

    def abort(self) -> None:
        if not self.outcome.done():
            self.outcome.set_result(False)

    def bounce(self) -> bool:
        self.abort()
        return True


async def accept_offer(queues: TaskQueues, task: api.TaskInfo, request_id: str, key: Key) -> api.OfferResult:
    """Hand an offered task to a poll waiting here and wait for the handout's outcome."""
    item = Offered(task, asyncio.get_running_loop().time(), request_id)
    if not queues.hand_now(key, item):
        return api.OfferResult(False, 0)
    taken = await item.outcome
    return api.OfferResult(taken, queues.pollers(key))


class Forwarder:
    """Offers this node's unpolled tasks to the other matching nodes (see the module docstring)."""

    def __init__(self, queues: TaskQueues, peers: PeerList, config: MatchingConfig) -> None:
        self._queues = queues
        self._peers = peers
        self._after_s = config.forward_after_ms / 1000.0
        self._backoff_s = config.forward_backoff_ms / 1000.0
        self._limit = config.forward_concurrency
        self._quiet_until: dict[tuple[str, Key], float] = {}  # (peer, queue) -> no offers before
        self._task: asyncio.Task[None] | None = None
        self.offers = 0  # offers made (tests, metrics)
        self.forwarded = 0  # tasks another node took

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="matching-forwarder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _run(self) -> None:
        tick = max(self._after_s / 2, 0.01)
        while True:
            await self._queues.queued.wait()
            self._queues.queued.clear()
            # While tasks wait here, look again every tick (a task becomes due, a peer's quiet
            # period ends); once none waits, sleep until one is queued.
            while self._queues.waiting() and not self._queues.stopped:
                try:
                    await self._round()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("forwarding tasks failed")
                await asyncio.sleep(tick)

    async def _round(self) -> None:
        peers = self._peers()
        if not peers:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._quiet_until = {k: t for k, t in self._quiet_until.items() if t > now}
        items = self._queues.unpolled(now - self._after_s, self._limit)
        if not items:
            return
        by_key: dict[Key, list[Queued]] = {}
        for key, item in items:
            by_key.setdefault(key, []).append(item)
        await asyncio.gather(*(self._offer_queue(key, queued, peers) for key, queued in by_key.items()))

    async def _offer_queue(self, key: Key, items: list[Queued], peers: list[tuple[str, api.MatchingPeer]]) -> None:
        """Offer a queue's tasks to the peers in turn; what nobody takes goes back (in order)."""
        pending = list(items)
        for identity, peer in peers:
            if not pending:
                break
            if self._quiet_until.get((identity, key), 0.0) > asyncio.get_running_loop().time():
                continue
            width = 1
            while pending:
                batch, pending = pending[:width], pending[width:]
                results = await asyncio.gather(*(self._offer(peer, item) for item in batch))
                left = [item for item, r in zip(batch, results, strict=True) if r is None or not r.taken]
                pending = left + pending
                if any(r is None or not r.taken for r in results):
                    self._quiet_until[(identity, key)] = asyncio.get_running_loop().time() + self._backoff_s
                    break
                width = max(1, min(self._limit, max(r.pollers for r in results if r is not None)))
        for item in reversed(pending):
            self._queues.offer(key, item, front=True)

    async def _offer(self, peer: api.MatchingPeer, item: Queued) -> api.OfferResult | None:
        if not item.request_id:
            item.request_id = self._queues.new_request_id()
        self.offers += 1
        try:
            result = await peer.offer_task(item.task, item.request_id)
        except Exception as e:
            log.debug("offering a task of %s failed: %s", item.task.workflow_id, e)
            return None
        if result.taken:
            item.settle()
            self.forwarded += 1
        return result
