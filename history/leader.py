"""The leader history node writes the shard assignment (docs/cluster.md, "Assignment").

Every history node of a cluster makes an ephemeral sequential znode under `election/`; the one
with the lowest sequence number leads. The leader recomputes the assignment whenever the live
history members change (legato.assignment.rebalance: balanced within one shard, moving only what
must move) and writes it with a version check, so that a leader that has just been replaced
cannot overwrite its successor's assignment. If the leader dies, its znode goes with its session
and the next node leads, starting from the stored assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kazoo.exceptions import BadVersionError

from legato.aio import wait_any
from legato.assignment import moves, rebalance
from legato.membership import HISTORY, Assignment, Membership
from legato.zk import CONNECTED, LOST, NodeExistsError, NoNodeError, Zk

log = logging.getLogger("legato.history.leader")

PREFIX = "n_"


class AssignmentLeader:
    """This node's part in the election, and the leader's work while it leads."""

    def __init__(self, membership: Membership) -> None:
        self._membership = membership
        self._zk: Zk = membership.zk
        self._paths = membership.paths
        self._node: str | None = None  # our election znode's name
        self.leading = False
        self._again = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        self._zk.on_state(self._on_state)
        await self._zk.retrying(self._join, "joining the leader election")
        self._task = asyncio.create_task(self._run(), name="history-leader")

    async def stop(self) -> None:
        """Leave the election (the next node leads at once)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # (a cancellation of this stop() still reaches it)
        node, self._node = self._node, None
        self.leading = False
        if node is not None:
            with contextlib.suppress(Exception):
                await self._zk.delete(f"{self._paths.election}/{node}")

    def _on_state(self, state: str) -> None:
        if state == LOST:
            self._node = None
            self.leading = False
        if state in (CONNECTED, LOST):
            self._again.set()

    async def _join(self) -> None:
        if self._node is not None:
            try:
                _, stat = await self._zk.get(f"{self._paths.election}/{self._node}")
                if stat.ephemeralOwner == self._zk.session_id:
                    return
            except NoNodeError:
                pass
        path = await self._zk.create(f"{self._paths.election}/{PREFIX}", self._membership.identity.encode(),
                                     ephemeral=True, sequence=True)
        self._node = path.rsplit("/", 1)[1]

    async def _run(self) -> None:
        watch = self._zk.watcher(lambda _event: self._again.set())
        view = self._membership.view
        while not self._stopped:
            self._again.clear()
            changed = view.changed
            try:
                if self._node is None:
                    await self._zk.retrying(self._join, "joining the leader election again")
                names = sorted(n for n in await self._zk.retrying(
                    lambda: self._zk.children(self._paths.election, watch), "reading the election")
                    if n.startswith(PREFIX))
                was = self.leading
                self.leading = bool(names) and names[0] == self._node
                if self.leading and not was:
                    log.info("this node (%s) now leads the shard assignment", self._membership.identity)
                if self.leading:
                    await self._assign()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("leader: %s (trying again)", e)
                await asyncio.sleep(0.5)
                continue
            # Wake on an election change, a session change, or a new member/assignment view.
            await wait_any(self._again.wait(), changed.wait())

    async def _assign(self) -> None:
        """Write the assignment for the live history members (version-checked; retried on a race)."""
        num_shards = self._membership.num_shards
        path = self._paths.assignment
        while True:
            try:
                raw, stat = await self._zk.get(path)
                version: int | None = stat.version
            except NoNodeError:
                raw, version = None, None
            current = Assignment.from_json(raw)
            previous = current.owner_list()
            previous = (previous + [None] * num_shards)[:num_shards]
            live = [m.identity for m in self._membership.view.with_role(HISTORY)]
            if self._membership.identity not in live:
                return  # the view is not read yet (or this node is leaving): it would be wrong
            owners = rebalance(previous, live)
            if owners == previous and len(current.owners) == num_shards:
                return
            new = Assignment.of(current.version + 1, owners)
            try:
                if version is None:
                    await self._zk.create(path, new.to_json())
                else:
                    await self._zk.set(path, new.to_json(), version)
            except (BadVersionError, NodeExistsError):
                continue
            log.info("shard assignment %d: %d history node(s), %d shard(s) move", new.version, len(live),
                     moves(previous, owners))
            return
