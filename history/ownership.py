"""ShardController: a cluster history node owns exactly the shards the assignment gives it
(docs/cluster.md, "Handoff").

For each shard the assignment gives this node, it first takes the shard's ZooKeeper lock (the
ephemeral znode `shards/<id>`: it waits while the previous owner still holds it), then acquires
the shard in the store (range_id + 1, conditional). For each shard it has but is no longer
given, it drains the shard (new requests are refused with the new owner's address, the ones in
flight finish), stops its queues, persists its ack levels, and only then deletes the lock: so the
new owner starts after the old one stopped writing, and the range_id fence stays the last line
of defence for the cases where that order cannot hold (a frozen or cut-off node).

Losing ZooKeeper:
* SUSPENDED (connection dropped, session maybe alive): every write of this node waits (the
  write gate is closed) and new requests are refused as retryable;
* CONNECTED again, same session: writes go on;
* LOST (session expired, or suspended for a whole session timeout): every shard is dropped at
  once without another write; the node registers again with a new session and gets shards
  from the next assignment like a new node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from history.leader import AssignmentLeader
from history.service import HistoryServiceImpl
from legato import metrics
from legato.aio import wait_any
from legato.config import Config
from legato.errors import ServiceError
from legato.membership import HISTORY, Membership
from legato.zk import CONNECTED, DISCONNECTED_ERRORS, LOST, SUSPENDED, NodeExistsError, NoNodeError, Zk, dumps

log = logging.getLogger("legato.history.ownership")

_RETRY_S = 0.2
_RETRY_MAX_S = 2.0


class ShardController:
    def __init__(self, history: HistoryServiceImpl, membership: Membership, config: Config) -> None:
        self._history = history
        self._membership = membership
        self._zk = membership.zk
        self._paths = membership.paths
        self._cluster = config.cluster
        self._address = config.cluster.advertised(config.cluster.history_address)
        self._leader = AssignmentLeader(membership)
        self._held: set[int] = set()  # shard locks (znodes) this session holds
        self._acquiring: dict[int, asyncio.Task[None]] = {}
        self._releasing: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(config.cluster.shard_acquire_concurrency)
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lost_session: int | None = None  # the session a LOST was reported for
        self._orphans: set[int] = set()  # locks held when that LOST came (still ours if the session lives)

    @property
    def leading(self) -> bool:
        return self._leader.leading

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._history.owner_hint = self._owner_hint
        self._history.on_shard_lost = self._on_shard_lost
        self._zk.on_state(self._on_state)
        await self._leader.start()
        self._task = asyncio.create_task(self._reconcile_loop(), name="history-shard-controller")

    async def stop(self) -> None:
        """Hand every shard over: leave the cluster (the leader reassigns this node's shards),
        release each shard as the new assignment arrives, and after graceful_stop_timeout_ms
        release whatever is left."""
        self._stopping = True
        await self._membership.leave()
        await self._leader.stop()
        others = [m for m in self._membership.view.with_role(HISTORY) if m.identity != self._membership.identity]
        if others and self._history.owned_shards():
            self._poke.set()
            deadline = time.monotonic() + self._cluster.graceful_stop_timeout_ms / 1000.0
            while self._my_shards() and time.monotonic() < deadline:
                await self._membership.wait_change(max(0.0, deadline - time.monotonic()))
                self._poke.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        for t in list(self._acquiring.values()):
            t.cancel()
        await asyncio.gather(*self._acquiring.values(), *self._releasing.values(), return_exceptions=True)
        await asyncio.gather(*(self._release(s) for s in set(self._history.owned_shards()) | self._held),
                             return_exceptions=True)

    async def abandon(self) -> None:
        """Stop without handing anything over (what a killed node does): the shards move once
        this node's session is gone, and the range_id fence keeps its writes out."""
        self._stopping = True
        await self._leader.stop()
        tasks = [t for t in (self._task, *self._acquiring.values(), *self._releasing.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def unsettled(self) -> str | None:
        """Why this node is not settled (readiness): shards assigned to it and not yet owned, or
        owned and no longer assigned (being released); None when it owns exactly its shards."""
        if self._stopping:
            return "stopping: handing its shards over"
        want, have = self._my_shards(), set(self._history.owned_shards())
        parts = []
        if want - have:
            parts.append(f"acquiring shards {_brief(want - have)}")
        if have - want:
            parts.append(f"releasing shards {_brief(have - want)}")
        return "; ".join(parts) or None

    # ------------------------------------------------------------ what the assignment says

    def _my_shards(self) -> set[int]:
        if not self._zk.connected:
            return set()
        return self._membership.view.assignment.shards_of(self._membership.identity)

    def _owner_hint(self, shard_id: int) -> str:
        owner = self._membership.view.shard_owner(shard_id)
        if owner is None or owner.identity == self._membership.identity:
            return ""
        return owner.address(HISTORY)

    async def _reconcile_loop(self) -> None:
        view = self._membership.view
        while True:
            self._poke.clear()
            changed = view.changed
            self._reconcile()
            await wait_any(self._poke.wait(), changed.wait())

    def _reconcile(self) -> None:
        if self._zk.state != CONNECTED:
            return
        want = self._my_shards()
        have = set(self._history.owned_shards()) | self._held
        releasing = (have | set(self._acquiring)) - want - set(self._releasing)
        acquiring = set() if self._stopping else want - set(self._history.owned_shards()) - set(self._acquiring)
        if releasing or acquiring:
            log.info("shards: releasing %s, acquiring %s", _brief(releasing), _brief(acquiring - set(self._releasing)))
        for s in (have | set(self._acquiring)) - want:
            if s in self._releasing:
                continue
            task = self._acquiring.pop(s, None)
            if task is not None:
                task.cancel()
            self._releasing[s] = asyncio.create_task(self._release_after(s, task), name=f"release-shard-{s}")
        if self._stopping:
            return
        for s in want - set(self._history.owned_shards()) - set(self._acquiring) - set(self._releasing):
            self._acquiring[s] = asyncio.create_task(self._acquire(s), name=f"acquire-shard-{s}")

    # ------------------------------------------------------------ acquire and release

    async def _acquire(self, shard_id: int) -> None:
        try:
            async with self._slots:
                await self._take_lock(shard_id)
                locked = time.monotonic()
                delay = _RETRY_S
                while True:
                    try:
                        await self._history.acquire_shard(shard_id)
                        break
                    except ServiceError as e:
                        log.warning("shard %d: acquiring it failed (retrying in %.1fs): %s", shard_id, delay,
                                    e.message)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX_S)
                took = time.monotonic() - locked
                metrics.shard_acquisitions.inc()
                metrics.shard_acquire_latency.observe(took)
                log.debug("shard %d acquired %.0f ms after its lock", shard_id, took * 1000)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("shard %d: acquiring it failed", shard_id)
        finally:
            if self._acquiring.get(shard_id) is asyncio.current_task():
                del self._acquiring[shard_id]
            self._poke.set()

    async def _take_lock(self, shard_id: int) -> None:
        """Create the shard's ephemeral lock znode, waiting while another node holds it."""
        path = self._paths.shard(shard_id)
        data = dumps({"identity": self._membership.identity, "address": self._address,
                      "since_ms": int(time.time() * 1000)})
        while True:
            try:
                await self._zk.create(path, data, ephemeral=True)
                self._held.add(shard_id)
                return
            except NodeExistsError:
                gone = asyncio.Event()
                try:
                    _, stat = await self._zk.get(path, _setter(self._zk, gone))
                except NoNodeError:
                    continue
                if stat.ephemeralOwner == self._zk.session_id:
                    self._held.add(shard_id)
                    return
                await gone.wait()  # released, or its owner's session expired
            except DISCONNECTED_ERRORS:
                await self._zk.wait_connected()

    async def _release_after(self, shard_id: int, acquiring: asyncio.Task[None] | None,
                             reason: str = "handover") -> None:
        try:
            if acquiring is not None:
                await asyncio.wait([acquiring])  # cancelled by the caller; let it clean up first
            await self._release(shard_id, reason)
        finally:
            if self._releasing.get(shard_id) is asyncio.current_task():
                del self._releasing[shard_id]
            self._poke.set()

    async def _release(self, shard_id: int, reason: str = "handover") -> None:
        """Drain and stop the shard, then give up its lock."""
        started = time.monotonic()
        owned = shard_id in self._history.owned_shards()
        try:
            await self._history.release_shard(shard_id, self._cluster.shard_drain_timeout_ms / 1000.0)
        except Exception:
            log.exception("shard %d: releasing it failed", shard_id)
        if shard_id in self._held:
            await self._drop_lock(shard_id)
        if owned or reason != "handover":
            metrics.shard_releases.labels(reason).inc()
            metrics.shard_release_latency.observe(time.monotonic() - started)

    async def _drop_lock(self, shard_id: int) -> None:
        path = self._paths.shard(shard_id)
        while self._zk.state != LOST:
            try:
                _, stat = await self._zk.get(path)
                if stat.ephemeralOwner == self._zk.session_id:
                    await self._zk.delete(path, stat.version)
                break
            except NoNodeError:
                break
            except DISCONNECTED_ERRORS:
                await self._zk.wait_connected(self._zk.session_timeout_s)
        self._held.discard(shard_id)

    def _on_shard_lost(self, shard_id: int) -> None:
        """A write found another node's range_id: that node has the shard, whatever the
        assignment says; give up the lock (the next reconciliation may take the shard again)."""
        if shard_id in self._held and shard_id not in self._releasing:
            self._releasing[shard_id] = asyncio.create_task(self._release_after(shard_id, None, "fenced"),
                                                            name=f"release-lost-shard-{shard_id}")

    # ------------------------------------------------------------ ZooKeeper session

    def _on_state(self, state: str) -> None:
        gate = self._history.write_gate
        if state == SUSPENDED:
            gate.close("the ZooKeeper connection is suspended")
        elif state == LOST:
            self._lost_session = self._zk.session_id
            self._orphans |= self._held
            self._held.clear()
            dropped = len(self._history.owned_shards())
            log.warning("ZooKeeper session lost: dropping every shard (%d) without another write", dropped)
            metrics.shard_releases.labels("session_lost").inc(dropped)
            gate.close("the ZooKeeper session was lost")
            self._history.drop_all_shards("this node's ZooKeeper session was lost")
            for t in self._acquiring.values():
                t.cancel()
            self._acquiring.clear()
            asyncio.get_running_loop().create_task(self._history.forget_lost_shards(), name="forget-lost-shards")
        elif state == CONNECTED:
            if self._lost_session is not None:
                orphans, self._orphans = self._orphans, set()
                if self._zk.session_id == self._lost_session:
                    # The session outlived the silence after all: the locks are still ours; give them up.
                    self._held |= orphans
                    for s in orphans:
                        asyncio.get_running_loop().create_task(self._drop_lock(s), name=f"drop-lock-{s}")
                self._lost_session = None
            gate.open()
            self._poke.set()


def _setter(zk: Zk, event: asyncio.Event) -> Callable[[Any], None]:
    """A watch that sets `event`."""
    return zk.watcher(lambda _event: event.set())


def _brief(shards: set[int], most: int = 20) -> str:
    """The shards for a log line: "none", "1, 4, 9", or the first `most` and how many more."""
    ordered = sorted(shards)
    if not ordered:
        return "none"
    more = f" (+{len(ordered) - most} more)" if len(ordered) > most else ""
    return ", ".join(map(str, ordered[:most])) + more
