"""RunAccess: the load-modify-commit helper every operation of the history service goes through.

Every state change of a run happens under the run's (namespace, workflow_id) lock: load the
cached mutable state, apply the rules (history.engine) to a Mutation, commit it through the
shard's group committer (ONE atomic conditional write), then update the caches and wake the
long polls waiting on that run. Updates of one run queued meanwhile are committed as one write
(history/update_queue.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from history.engine import Engine, HistoryLimitExceeded
from history.shard import CacheEntry, ShardContext, Update
from history.state import MutableState, Mutation
from history.store.base import CurrentRunRow, CurrentRunWrite, ExecutionStore, RunConditionFailed
from history.update_queue import PendingUpdate, UpdateQueue
from legato import metrics
from legato.errors import NotFound, ServiceError, Unavailable
from legato.events import HistoryEvent

log = logging.getLogger("legato.history")
_WORKFLOWS_CLOSED = metrics.children(metrics.workflows_closed)

_T = TypeVar("_T")
CONFLICT_RETRIES = 3  # a run written by somebody else meanwhile: reload and apply again, this many times
HISTORY_READ_PAGE = 1000  # events per store read
RunKey = tuple[str, str, str]
ShardOf = Callable[[str, str, bool], ShardContext]  # (namespace, workflow_id, admit) -> the owned shard


class Notifier:
    """Wakes long polls waiting for a run to change. No polling: commits resolve futures."""

    def __init__(self) -> None:
        self._waiters: dict[RunKey, list[asyncio.Future[None]]] = {}

    def waiter(self, key: RunKey) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        return fut

    def discard(self, key: RunKey, fut: asyncio.Future[None]) -> None:
        lst = self._waiters.get(key)
        if lst is not None:
            try:
                lst.remove(fut)
            except ValueError:
                pass
            if not lst:
                del self._waiters[key]

    def notify(self, key: RunKey) -> None:
        for fut in self._waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    def notify_all(self) -> None:
        for key in list(self._waiters):
            self.notify(key)

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def wait_for_change(fut: asyncio.Future[None], timeout_s: float) -> None:
    """Wait until `fut` (a waiter of one long poll, nobody else's) is resolved or `timeout_s` passed."""
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, fut)
    try:
        await fut
    finally:
        timer.cancel()


def current_row(st: MutableState) -> CurrentRunRow:
    return CurrentRunRow(st.namespace, st.workflow_id, st.run_id, st.status, st.start_request_id, st.start_time_ms)


def update_of(m: Mutation) -> Update:
    """The atomic write of a run's mutation (with the run that continues it, if any)."""
    nxt = m.successor
    if nxt is not None:
        return Update([m, nxt], CurrentRunWrite(current_row(nxt.state), m.state.run_id))
    return Update([m], CurrentRunWrite(current_row(m.state), m.state.run_id) if m.closed else None)


class RunAccess:
    """Load, update and read runs of the shards this node owns. `shard_of` finds a workflow's
    shard (ShardOwnershipLost when not owned; `admit`: refused too while it is handed over)."""

    def __init__(self, store: ExecutionStore, engine: Engine, clock: Callable[[], int], shard_of: ShardOf,
                 max_coalesced: int) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self._shard_of = shard_of
        self.updates = UpdateQueue(self._drain_updates)
        self._max_coalesced = max_coalesced
        self.changes = Notifier()  # any committed change of a run (history long polls)
        # a run closed or its workflow task failed: what result long polls wait for (they are not
        # woken by every step of the run)
        self.closers = Notifier()

    def shard(self, namespace: str, workflow_id: str, admit: bool = True) -> ShardContext:
        return self._shard_of(namespace, workflow_id, admit)

    def notify_all(self) -> None:
        """Every long poll looks again (a shard moved or the service stops)."""
        self.changes.notify_all()
        self.closers.notify_all()

    async def load(self, shard: ShardContext, namespace: str, workflow_id: str, run_id: str) -> CacheEntry:
        """The run ("": the current run of the workflow), from the cache or the store."""
        if not run_id:
            cur = await shard.get_current(namespace, workflow_id)
            if cur is None:
                raise NotFound(f"workflow {workflow_id!r} not found in namespace {namespace!r}",
                               reason="WorkflowNotFound")
            run_id = cur.run_id
        entry = await shard.load(namespace, workflow_id, run_id)
        if entry is None:
            raise NotFound(f"run {run_id!r} of workflow {workflow_id!r} not found in namespace {namespace!r}",
                           reason="WorkflowNotFound")
        return entry

    async def update(self, namespace: str, workflow_id: str, run_id: str,
                     fn: Callable[[Mutation, CacheEntry], _T]) -> tuple[_T, CacheEntry]:
        """Apply `fn` to the run's state under its lock and commit what it produced (with the
        updates of the same run queued meanwhile: history/update_queue.py)."""
        self.shard(namespace, workflow_id)  # not ours: fail before queueing
        result: tuple[_T, CacheEntry] = await self.updates.submit((namespace, workflow_id), run_id, fn)
        return result

    async def _drain_updates(self, key: tuple[str, str], q: deque[PendingUpdate]) -> None:
        """Take the updates at the front of `q` aimed at one run and apply them as one write."""
        run_id = q[0].run_id
        batch: list[PendingUpdate] = []
        while q and q[0].run_id == run_id and len(batch) < self._max_coalesced:
            p = q.popleft()
            if p.live:
                batch.append(p)
        for attempt in range(CONFLICT_RETRIES):
            batch = [p for p in batch if p.live]
            if not batch:
                return
            try:
                redo = await self._apply_updates(key, run_id, batch)
            except RunConditionFailed as e:  # somebody else wrote the run: reload and apply again
                if attempt + 1 < CONFLICT_RETRIES:
                    continue
                for p in batch:
                    p.fail(e)
                return
            except BaseException:  # cancelled (shutdown): the callers must not wait for ever
                for p in batch:
                    p.fail(asyncio.CancelledError())
                raise
            if redo:
                q.extendleft(reversed([p for p in redo if p.live]))
            return

    async def _apply_updates(self, key: tuple[str, str], run_id: str,
                             batch: list[PendingUpdate]) -> list[PendingUpdate]:
        """Apply `batch` in order to one state and commit it as one write; settle each update's
        future. Returns the updates to apply afresh (after a run closed, or after an update that
        failed half-way through changing the state). RunConditionFailed: nothing was settled."""
        ns, wf = key
        try:
            shard = self.shard(ns, wf, admit=False)  # admitted when queued
        except ServiceError as e:
            for p in batch:
                p.fail(e)
            return []
        async with shard.lock(ns, wf):
            try:
                entry = await self.load(shard, ns, wf, run_id)
            except ServiceError as e:
                for p in batch:
                    p.fail(e)
                return []
            applied, redo = self._apply_each(shard, entry, batch)
            muts = [m for _, m, _ in applied if not m.empty]
            if muts:
                m = Mutation.merged(muts)
                if not await self._commit(shard, entry, m, applied):
                    return redo
            for p, _, result in applied:
                p.resolve((result, entry))
            return redo

    async def _commit(self, shard: ShardContext, entry: CacheEntry, m: Mutation,
                      applied: list[tuple[PendingUpdate, Mutation, Any]]) -> bool:
        """Commit the merged mutation of `applied`; False if it failed (each update failed with
        the error). RunConditionFailed propagates (the updates are applied again)."""
        update = update_of(m)
        try:
            await shard.commit(update)
        except RunConditionFailed:
            shard.evict(entry.state.key)
            raise
        except (ServiceError, HistoryLimitExceeded) as e:
            shard.evict(entry.state.key)
            for p, _, _ in applied:
                p.fail(e)
            return False
        except Exception as e:
            shard.evict(entry.state.key)
            log.exception("history: unexpected error committing %s/%s", entry.state.workflow_id, entry.state.run_id)
            err = ServiceError(f"internal error in history while updating workflow {entry.state.workflow_id!r} "
                               f"(run {entry.state.run_id}): {type(e).__name__}: {e}", reason="Internal")
            for p, _, _ in applied:
                p.fail(err)
            return False
        except BaseException:  # cancelled: the write, if any, is settled (ShardContext.commit)
            if update.written:
                self.after_commit(shard, entry, m)
                for p, _, result in applied:
                    p.resolve((result, entry))
            else:
                shard.evict(entry.state.key)
            raise
        self.after_commit(shard, entry, m)
        return True

    def _apply_each(self, shard: ShardContext, entry: CacheEntry, batch: list[PendingUpdate]
                    ) -> tuple[list[tuple[PendingUpdate, Mutation, Any]], list[PendingUpdate]]:
        """Run the batch's functions in turn on the run's state: (what applied, what to redo)."""
        applied: list[tuple[PendingUpdate, Mutation, Any]] = []
        for i, p in enumerate(batch):
            m = Mutation.of(entry.state, self.clock())
            try:
                result = p.fn(m, entry)
            except (ServiceError, HistoryLimitExceeded) as e:
                p.fail(e)
                if m.empty:
                    continue
                # it changed the state before it failed: the state is thrown away, and the updates
                # applied before it go again on a fresh copy
                shard.evict(entry.state.key)
                return [], [x for x, _, _ in applied] + batch[i + 1:]
            except Exception as e:
                shard.evict(entry.state.key)
                log.exception("history: unexpected error updating %s/%s", entry.state.workflow_id, entry.state.run_id)
                p.fail(ServiceError(f"internal error in history while updating workflow {entry.state.workflow_id!r} "
                                    f"(run {entry.state.run_id}): {type(e).__name__}: {e}", reason="Internal"))
                return [], [x for x, _, _ in applied] + batch[i + 1:]
            applied.append((p, m, result))
            if m.closed or m.successor is not None:
                return applied, batch[i + 1:]  # the run closed: what follows is applied afresh
        return applied, []

    def after_commit(self, shard: ShardContext, entry: CacheEntry, m: Mutation) -> None:
        """The write of `m` is durable: update the caches and wake the long polls."""
        st = m.state
        entry.add_events(m.events)
        shard.runs.put(st.key, entry)
        nxt = m.successor
        if nxt is not None:  # continue-as-new, workflow retry, cron: the new run is current
            shard.runs.put(nxt.state.key, CacheEntry(nxt.state, list(nxt.events), shard.event_budget))
            shard.current.put((st.namespace, st.workflow_id), current_row(nxt.state))
        elif m.closed:
            shard.current.put((st.namespace, st.workflow_id), current_row(st))
        if not st.running:  # closed, continued as new or retried: a run never reopens
            shard.closed_runs.put(st.run_id, True)
        if m.closed:
            _WORKFLOWS_CLOSED(st.namespace, st.status.lower()).inc()
            metrics.history_length_at_close.observe(st.next_event_id - 1)
        self.changes.notify(st.key)
        if m.closed or st.last_wft_failure is not None:
            self.closers.notify(st.key)

    # ------------------------------------------------------------------ events

    async def read_events(self, entry: CacheEntry, first: int, end: int, limit: int) -> list[HistoryEvent]:
        """Committed events first <= id < end (end <= the committed next_event_id), at most `limit`."""
        end = min(end, first + limit)
        if first >= end:
            return []
        events = entry.events
        if events is not None and len(events) >= end - 1:
            return events[first - 1:end - 1]
        ns, wf, run = entry.state.key
        out: list[HistoryEvent] = []
        pos = first
        while pos < end:
            texts = await self.store.read_history(ns, wf, run, pos, end, min(end - pos, HISTORY_READ_PAGE))
            if not texts:
                break
            for text in texts:
                ev = HistoryEvent.decode(text)
                if ev.event_id != pos:
                    raise Unavailable(f"history of {wf}/{run} is inconsistent in the store: expected event {pos}, "
                                      f"found {ev.event_id}", reason="StoreError")
                out.append(ev)
                pos += 1
        return out

    async def history_slice(self, entry: CacheEntry, first: int, end: int) -> list[HistoryEvent]:
        """Events first .. end-1 (the new events of a sticky workflow task)."""
        out = await self.read_events(entry, first, end, end - first)
        if len(out) != end - first:
            st = entry.state
            raise Unavailable(f"history of {st.workflow_id}/{st.run_id}: expected events {first} to {end - 1} in "
                              f"the store, found {len(out)}", reason="StoreError")
        return out

    async def full_history(self, shard: ShardContext, entry: CacheEntry, end: int) -> list[HistoryEvent]:
        """Events 1 .. end-1; fills the run's event cache when it was not in memory."""
        events = entry.events
        if events is not None and len(events) >= end - 1:
            return events[:end - 1]
        st = entry.state
        out = await self.read_events(entry, 1, end, end)
        if len(out) != end - 1:
            raise Unavailable(f"history of {st.workflow_id}/{st.run_id}: expected {end - 1} events in the store, "
                              f"found {len(out)}", reason="StoreError")
        if entry.events is None and entry.state.next_event_id == end and shard.runs.get(st.key) is entry:
            entry.set_events(list(out))
        return out
