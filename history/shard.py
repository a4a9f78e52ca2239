"""ShardContext: everything one owned shard needs.

* range_id fencing and task ids from range blocks (``range_id << range_block_bits`` upward);
* the group committer: mutations of several runs ready together go into ONE conditional write
  (at most `group_commit_max_batch` updates, and at most the store's `max_batch_bytes` of states and
  task payloads, if it has such a bound; with `group_commit_max_wait_ms`, a write also waits for
  its oldest update to have waited that long); if a batch is rejected because of one run's
  condition, the others are retried one by one;
* the mutable-state cache (LRU) and the current-run pointer cache;
* one asyncio lock per (namespace, workflow_id), so the updates of a run are serialized;
* the transfer and timer queue processors, and the periodic ack flush.

A conditional write that finds another range_id drops the shard at once: processors stop,
caches clear, waiting commits fail with ShardOwnershipLost, and nothing is written again.

A conditional write whose outcome is unknown (the store timed out after sending it:
WriteOutcomeUnknown) leaves the shard unsettled: its callers fail with a retryable Unavailable and
their runs leave the caches, and before the shard writes again (or flushes its ack level) it
renews its range_id, which fences that write if it is still in flight; if the write did take
effect, its tasks are then handed to the queue processors as a successful write's would have been.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from history.queues import TimerQueueProcessor, TimerTask, TransferQueueProcessor, TransferTask
from history.state import MutableState, Mutation
from history.store.base import (
    CurrentRunRow,
    CurrentRunWrite,
    ExecutionStore,
    HistoryAppend,
    RunConditionFailed,
    RunWrite,
    ShardInfo,
    ShardWrite,
    TimerTaskRow,
    TransferTaskRow,
    WriteOutcomeUnknown,
)
from history.timers import TimerQueue, TimerQueueFactory
from legato import codec, metrics
from legato.config import Config
from legato.errors import ServiceError, ShardOwnershipLost, Unavailable
from legato.events import HistoryEvent

log = logging.getLogger("legato.history")
_TRANSITIONS = metrics.state_transitions

MAX_CACHED_EVENTS = 5000  # a run's events are kept in memory (with its state) up to this many
EVENT_CACHE_BYTES = 256 * 1024 * 1024  # ... and all cached events of all shards up to about this many bytes
DRAIN_POLL_S = 0.01  # a shard being handed over looks again this often while commits are queued
ROW_OVERHEAD_BYTES = 64  # what a row adds to a store batch beyond its payload (keys, headers), roughly
# Timer rows point-deleted above the timer ack level (fired while an earlier timer had not), at
# most, until the level passes them: the tombstones a timer scan from the level may cross
# (Cassandra warns at 1,000 in one read). Beyond that a fired row stays until the range delete
# takes it; a next owner may fire it again meanwhile, which history drops as stale.
MAX_TIMER_TOMBSTONES_ABOVE_ACK = 500

RunKey = tuple[str, str, str]
_K = TypeVar("_K")
_V = TypeVar("_V")


class _Lru(Generic[_K, _V]):
    def __init__(self, capacity: int, on_evict: Callable[[_V], None] | None = None) -> None:
        self.capacity = capacity
        self._d: OrderedDict[_K, _V] = OrderedDict()
        self._on_evict = on_evict

    def get(self, key: _K) -> _V | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: _K, value: _V) -> None:
        if self.capacity <= 0:
            if self._on_evict is not None:
                self._on_evict(value)
            return
        old = self._d.get(key)
        if old is not None and old is not value and self._on_evict is not None:
            self._on_evict(old)
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.capacity:
            _, evicted = self._d.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(evicted)

    def __contains__(self, key: object) -> bool:
        return key in self._d  # a look, not a use: the order stays

    def peek(self, key: _K) -> _V | None:
        return self._d.get(key)  # a look, not a use: the order stays

    def pop(self, key: _K) -> None:
        v = self._d.pop(key, None)
        if v is not None and self._on_evict is not None:
            self._on_evict(v)

    def clear(self) -> None:
        values = list(self._d.values())
        self._d.clear()
        if self._on_evict is not None:
            for v in values:
                self._on_evict(v)

    def __len__(self) -> int:
        return len(self._d)


class _Locks(dict[Any, list[Any]]):
    """The per-workflow locks of a shard; `idle` is set while nobody holds or waits for one (a
    shard being handed over waits for it: the requests in flight are done)."""

    def __init__(self) -> None:
        super().__init__()
        self.idle = asyncio.Event()
        self.idle.set()


class _KeyLock:
    """An async lock per key, created on demand and dropped when nobody holds or waits for it."""

    __slots__ = ("_entry", "_key", "_locks")

    def __init__(self, locks: _Locks, key: Any) -> None:
        self._locks = locks
        self._key = key
        self._entry: list[Any] = []

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = [asyncio.Lock(), 0]
            self._locks.idle.clear()
        entry[1] += 1
        self._entry = entry
        try:
            await entry[0].acquire()
        except BaseException:
            self._release_ref()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry[0].release()
        self._release_ref()

    def _release_ref(self) -> None:
        self._entry[1] -= 1
        if self._entry[1] == 0 and self._locks.get(self._key) is self._entry:
            del self._locks[self._key]
            if not self._locks:
                self._locks.idle.set()


class EventBudget:
    """Bytes of history events a shard keeps in memory (shared by its cache entries)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class CacheEntry:
    """A run's committed mutable state, and its events if they are all in memory."""

    __slots__ = ("_budget", "_bytes", "events", "state")

    def __init__(self, state: MutableState, events: list[HistoryEvent] | None, budget: EventBudget) -> None:
        self.state = state
        self.events: list[HistoryEvent] | None = None
        self._budget = budget
        self._bytes = 0
        if events is not None:
            self.set_events(events)

    def set_events(self, events: list[HistoryEvent]) -> None:
        """Keep the run's complete history (events 1 .. next_event_id - 1) in memory, if it fits."""
        self.drop_events()
        size = self.state.history_bytes
        if len(events) > MAX_CACHED_EVENTS or self._budget.used + size > self._budget.limit:
            return
        self.events = events
        self._bytes = size
        self._budget.used += size

    def add_events(self, events: list[HistoryEvent]) -> None:
        """Append newly committed events (state.history_bytes already counts them)."""
        if self.events is None:
            return
        delta = self.state.history_bytes - self._bytes
        if len(self.events) + len(events) > MAX_CACHED_EVENTS or self._budget.used + delta > self._budget.limit:
            self.drop_events()
            return
        self.events.extend(events)
        self._bytes += delta
        self._budget.used += delta

    def drop_events(self) -> None:
        if self.events is not None:
            self._budget.used -= self._bytes
            self._bytes = 0
            self.events = None


@dataclass(slots=True)
class Update:
    """One atomic unit: mutations of one or more runs (all of one workflow id), and maybe the
    current-run pointer."""

    mutations: list[Mutation]
    current: CurrentRunWrite | None = None
    written: bool = False  # set once the write is durable (its caller may have been cancelled meanwhile)


@dataclass(slots=True)
class _Prepared:
    update: Update
    future: asyncio.Future[None]
    size: int = 0  # estimated bytes in a store batch, once encoded (0: not yet)
    payloads: list[str] = field(default_factory=list)  # encoded task data, in task-id order
    appends: list[HistoryAppend] = field(default_factory=list)
    runs: list[RunWrite] = field(default_factory=list)
    transfer_rows: list[TransferTaskRow] = field(default_factory=list)
    timer_rows: list[TimerTaskRow] = field(default_factory=list)
    outbox_rows: list[TimerTaskRow] = field(default_factory=list)  # timers, when the queue keeps an outbox
    transfer: list[TransferTask] = field(default_factory=list)
    timers: list[TimerTask] = field(default_factory=list)  # for the timer queue's `add`
    far: list[TimerTask] = field(default_factory=list)  # for its `add_far`: rows past its outbox boundary
    settled: bool = False  # written, or failed
    queued_at: float = 0.0  # the event loop's clock when it was queued
    waiter: asyncio.Future[None] | None = None  # where a cancelled caller waits for the outcome


class WriteGate:
    """Whether the shards of a history node may write: closed while its ZooKeeper connection is
    suspended (another node may be taking its shards), open otherwise. Shared by every shard."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self.why = ""

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def close(self, why: str) -> None:
        self.why = why
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()


class ShardContext:
    def __init__(self, info: ShardInfo, store: ExecutionStore, config: Config, clock: Callable[[], int],
                 dispatch: Callable[[TransferTask], Awaitable[None]], fire: Callable[[TimerTask], Awaitable[None]],
                 on_lost: Callable[[ShardContext], None], timer_queues: TimerQueueFactory | None = None,
                 gate: WriteGate | None = None, owner_hint: Callable[[int], str] | None = None,
                 timer_obsolete: Callable[[TimerTask], bool] | None = None) -> None:
        """`timer_queues` builds the shard's timer queue (queues.kind kafka: on the timer topic);
        by default the timers wait in the store's timer rows. `gate`: writes wait while it is
        closed. `owner_hint(shard_id)`: the address of the node this one believes owns the shard
        (named in the error of a request that arrives while the shard is handed over).
        `timer_obsolete`: for the store's timer rows, which timers no run will expect (see
        TimerQueueProcessor)."""
        self.shard_id = info.shard_id
        self.range_id = info.range_id
        self.owner = info.owner
        self._store = store
        self._config = config
        self._bits = config.history.range_block_bits
        self._next_id = info.range_id << self._bits
        self._end_id = (info.range_id + 1) << self._bits
        self._persisted_ack = info.transfer_ack_level
        self._persisted_timer_ack = info.timer_ack_level
        self._persisted_outbox_ack = info.timer_outbox_ack_level
        # Timers are written due no earlier than this (ms): at least every timer ack level this
        # shard persisted or is persisting, so none lands below the range delete of fired timers.
        self._timer_floor = info.timer_ack_level
        self._tombstones_above_ack: list[int] = []  # heap: fire times of timers point-deleted above the level
        self._on_lost = on_lost
        self.lost = False
        self.closed = False
        self.event_budget = EventBudget(EVENT_CACHE_BYTES // config.history.num_shards)
        self.runs: _Lru[RunKey, CacheEntry] = _Lru(config.history.mutable_state_cache_size, CacheEntry.drop_events)
        self.current: _Lru[tuple[str, str], CurrentRunRow] = _Lru(config.history.mutable_state_cache_size)
        self.closed_runs: _Lru[str, bool] = _Lru(config.history.closed_runs_remembered)  # run ids
        self._locks = _Locks()
        self._gate = gate or WriteGate()
        self._owner_hint = owner_hint
        self.draining = False  # being handed over: new requests go to the next owner
        self._queue: list[_Prepared] = []
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._writer_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []  # run_in_background's tasks
        self.transfer = TransferQueueProcessor(self.shard_id, store, info.transfer_ack_level, dispatch)
        self.timers: TimerQueue = (
            timer_queues(info, store, clock, fire) if timer_queues is not None
            else TimerQueueProcessor(self.shard_id, store, clock, config.history.timer_lookahead_ms, fire,
                                     ack_level_ms=info.timer_ack_level,
                                     max_firing=config.history.timer_fires_in_flight, obsolete=timer_obsolete,
                                     batch_ms=config.history.timer_batch_ms))
        self.commits = 0  # store writes made (for tests and metrics)
        # Group commit cuts batches at this estimated size (None: no bound; SQLite has none).
        self._max_batch_bytes: int | None = getattr(store, "max_batch_bytes", None)
        self._unsettled: list[_Prepared] = []  # written with an unknown outcome, not yet settled
        self._must_renew = False  # a write or range renewal had an unknown outcome

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.transfer.load()
        self._writer_task = asyncio.create_task(self._writer(), name=f"shard-{self.shard_id}-writer")
        self._flush_task = asyncio.create_task(self._flush_loop(), name=f"shard-{self.shard_id}-flush")
        self.timers.start()

    def run_in_background(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run `coro` while this node owns the shard (cancelled when it stops or is lost)."""
        self._background.append(asyncio.create_task(coro, name=f"shard-{self.shard_id}-{name}"))

    def _cancel_background(self) -> None:
        current = asyncio.current_task()
        for t in self._background:
            if t is not current:
                t.cancel()

    async def stop(self) -> None:
        """Stop processing: let a write in progress finish, fail queued ones (Unavailable), and
        flush the ack level one last time if the shard is still ours."""
        if self.closed:
            return
        self.closed = True
        self._cancel_background()
        self.transfer.stop()
        await self.timers.close()
        async with self._write_lock:  # waits for a batch in progress; later ones never start
            for t in (self._writer_task, self._flush_task):
                if t is not None:
                    t.cancel()
            self._fail_queue(Unavailable(f"shard {self.shard_id}: history is stopping", reason="ShuttingDown"))
            if not self.lost and self._gate.is_open:
                try:
                    await self._flush_locked()
                except Exception as e:  # shutting down anyway
                    log.warning("shard %d: final ack flush failed: %s", self.shard_id, e)

    def lose(self, err: ShardOwnershipLost) -> None:
        """Drop the shard: never write again with this range_id."""
        if self.lost:
            return
        self.lost = True
        log.warning("shard %d: ownership lost, dropping the shard: %s", self.shard_id, err.message)
        self._cancel_background()
        current = asyncio.current_task()
        for t in (self._writer_task, self._flush_task):
            if t is not None and t is not current:
                t.cancel()
        self.transfer.stop()
        self.timers.stop()
        self.runs.clear()
        self.current.clear()
        self._fail_queue(err)
        self._on_lost(self)

    async def drain(self, timeout_s: float) -> bool:
        """Stop admitting requests and wait (up to `timeout_s`) until the ones in flight are done
        and their writes committed; False if some were still running."""
        self.draining = True
        self.transfer.stop()
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained()
        except TimeoutError:
            return False
        return True

    async def _drained(self) -> None:
        while True:
            await self._locks.idle.wait()
            async with self._write_lock:  # a batch being written is done
                if not self._queue and self._locks.idle.is_set():
                    return
            await asyncio.sleep(DRAIN_POLL_S)  # commits still queued: the writer takes them first

    def admit(self) -> None:
        """check() for a new request: also refused while the shard is handed over or writes are
        paused (the caller retries, on the next owner)."""
        self.check()
        if self.draining:
            owner = self._owner_hint(self.shard_id) if self._owner_hint is not None else ""
            raise ShardOwnershipLost(f"shard {self.shard_id} is being handed over to another history node"
                                     + (f" ({owner})" if owner else ""), reason="ShardMoving", owner=owner)
        if not self._gate.is_open:
            raise Unavailable(f"shard {self.shard_id}: writes are paused ({self._gate.why})", reason="WritesPaused")

    def check(self) -> None:
        if self.lost:
            owner = self._owner_hint(self.shard_id) if self._owner_hint is not None else ""
            raise ShardOwnershipLost(f"shard {self.shard_id} is no longer owned by this history node "
                                     "(another node acquired it)", reason="ShardOwnershipLost", owner=owner)
        if self.closed:
            raise Unavailable(f"shard {self.shard_id}: history is stopping", reason="ShuttingDown")

    # ------------------------------------------------------------------ locks and caches

    def lock(self, namespace: str, workflow_id: str) -> _KeyLock:
        return _KeyLock(self._locks, (namespace, workflow_id))

    def settled_state(self, namespace: str, workflow_id: str, run_id: str) -> MutableState | None:
        """The run's state as last committed, if it is cached and nothing is changing it now
        (while an update holds or waits for the workflow's lock, the cached state may be ahead
        of the store); None otherwise."""
        if (namespace, workflow_id) in self._locks:
            return None
        entry = self.runs.peek((namespace, workflow_id, run_id))
        return entry.state if entry is not None else None

    async def get_current(self, namespace: str, workflow_id: str) -> CurrentRunRow | None:
        row = self.current.get((namespace, workflow_id))
        if row is None:
            row = await self._store.get_current_run(self.shard_id, namespace, workflow_id)
            self.check()
            if row is not None:
                self.current.put((namespace, workflow_id), row)
        return row

    async def load(self, namespace: str, workflow_id: str, run_id: str) -> CacheEntry | None:
        key = (namespace, workflow_id, run_id)
        entry = self.runs.get(key)
        if entry is None:
            row = await self._store.get_run(self.shard_id, namespace, workflow_id, run_id)
            self.check()
            if row is None:
                return None
            entry = CacheEntry(MutableState.decode(row.state), None, self.event_budget)
            self.runs.put(key, entry)
        return entry

    def evict(self, key: RunKey) -> None:
        self.runs.pop(key)
        self.current.pop((key[0], key[1]))

    # ------------------------------------------------------------------ group commit

    async def commit(self, update: Update) -> None:
        """Write `update` atomically (possibly together with other runs' updates).

        Once queued, the write happens whatever becomes of the caller; so a cancelled caller
        (a client that went away) still waits here for its outcome before CancelledError
        propagates: its cleanup, under the run's lock, then comes after the write, and nobody
        can load the run's old state into the cache while the write is still on its way."""
        self.check()
        loop = asyncio.get_running_loop()
        p = _Prepared(update, loop.create_future(), queued_at=loop.time())
        self._queue.append(p)
        self._wake.set()
        try:
            await p.future
        except asyncio.CancelledError:
            if not p.settled:  # the writer settles every queued write, also when it stops
                waiter = p.waiter = loop.create_future()
                while not waiter.done():
                    with contextlib.suppress(BaseException):  # cancelled again, or the write failed
                        await asyncio.shield(waiter)
            raise

    def _fail_queue(self, err: BaseException) -> None:
        queue, self._queue = self._queue, []
        for p in queue:
            _fail(p, err)

    async def _writer(self) -> None:
        max_batch = self._config.history.group_commit_max_batch
        max_wait = self._config.history.group_commit_max_wait_ms / 1000.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self.lost and not self.closed:
                if max_wait > 0:
                    await self._linger(max_batch, max_wait)
                batch = self._take_batch(max_batch)
                if not batch:
                    continue
                try:
                    await self._write_batch(batch)
                except asyncio.CancelledError:
                    err: ServiceError = (
                        ShardOwnershipLost(f"shard {self.shard_id} was dropped", reason="ShardOwnershipLost")
                        if self.lost else
                        Unavailable(f"shard {self.shard_id}: history is stopping", reason="ShuttingDown"))
                    _fail_all(batch, err)
                    raise
                except Exception as e:
                    log.exception("shard %d: unexpected error in the committer", self.shard_id)
                    for p in batch:
                        _fail(p, Unavailable(f"shard {self.shard_id}: commit failed: {e}"))

    async def _linger(self, max_batch: int, max_wait: float) -> None:
        """Wait until the oldest queued update has waited `max_wait` seconds or `max_batch` updates
        are queued (Kafka's linger.ms): under a steady load a shard then writes at most one
        conditional batch per `max_wait`, so more transitions share each Paxos round and its
        history append (README, "Load testing", has what it saves)."""
        loop = asyncio.get_running_loop()
        while self._queue and len(self._queue) < max_batch and not self.lost and not self.closed:
            remaining = self._queue[0].queued_at + max_wait - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _take_batch(self, max_batch: int) -> list[_Prepared]:
        """The next updates to write together: at most max_batch of them, and no more than the
        store's byte bound (the first one goes even if it alone is larger)."""
        limit = self._max_batch_bytes
        if limit is None:
            head, self._queue = self._queue[:max_batch], self._queue[max_batch:]
            return head
        batch: list[_Prepared] = []
        total = 0
        taken = 0
        for p in self._queue[:max_batch]:
            try:
                size = self._encode(p)
            except Exception as e:  # this update cannot be written; its neighbours can
                taken += 1
                _fail(p, _as_service_error(e, self.shard_id))
                continue
            if batch and total + size > limit:
                break
            batch.append(p)
            total += size
            taken += 1
        del self._queue[:taken]
        return batch

    def _encode(self, p: _Prepared) -> int:
        """Encode p's run states and task payloads (once); return its estimated size in bytes."""
        if p.size:
            return p.size
        size = ROW_OVERHEAD_BYTES if p.update.current is not None else 0
        for m in p.update.mutations:
            st = m.state
            rw = RunWrite(st.namespace, st.workflow_id, st.run_id, st.next_event_id, st.encode(),
                          m.expected_next_event_id)
            p.runs.append(rw)
            size += len(rw.state) + ROW_OVERHEAD_BYTES
            for data in m.transfer:
                p.payloads.append(codec.dump_record(data))
            for _, data in m.timers:
                p.payloads.append(codec.dump_record(data))
        size += sum(len(x) + ROW_OVERHEAD_BYTES for x in p.payloads)
        p.size = size
        return size

    async def _allocate(self, n: int) -> int:
        """Reserve n consecutive task ids; renew the range block (conditional range_id + 1) when
        the current one is exhausted."""
        if self._next_id + n > self._end_id:
            if n > (1 << self._bits):
                raise Unavailable(f"shard {self.shard_id}: {n} task ids do not fit in one range block")
            await self._renew()
        first = self._next_id
        self._next_id += n
        return first

    async def _renew(self) -> None:
        """range_id + 1 (conditional): a new block of task ids, and a fence for anything this node
        sent with the old range_id. An unknown outcome leaves the shard to renew again."""
        try:
            info = await self._store.renew_range(self.shard_id, self.range_id, self.owner)
        except WriteOutcomeUnknown:
            self._must_renew = True
            raise
        self.range_id = info.range_id
        self._next_id = info.range_id << self._bits
        self._end_id = (info.range_id + 1) << self._bits
        self._must_renew = False

    def _prepare(self, p: _Prepared, txn_id: int, ids: list[int]) -> None:
        self._encode(p)
        outbox_until = self.timers.outbox_until()
        pos = 0
        for m in p.update.mutations:
            st = m.state
            if m.encoded:
                p.appends.append(HistoryAppend(st.namespace, st.workflow_id, st.run_id, txn_id, m.encoded))
            for data in m.transfer:
                tid = ids[pos]
                p.transfer.append(TransferTask(tid, data))
                p.transfer_rows.append(TransferTaskRow(tid, p.payloads[pos]))
                pos += 1
            for due, data in m.timers:
                tid = ids[pos]
                if outbox_until is not None and due <= outbox_until:
                    # The outbox is ordered by task id: no due time bounds what is deleted.
                    p.timers.append(TimerTask(due, tid, data))
                    p.outbox_rows.append(TimerTaskRow(due, tid, p.payloads[pos]))
                else:
                    # A timer due before the timer ack level (already due when written) fires at
                    # the level instead: late by what the clock moved since the last ack flush,
                    # never early.
                    fire = max(due, self._timer_floor)
                    (p.timers if outbox_until is None else p.far).append(TimerTask(fire, tid, data))
                    p.timer_rows.append(TimerTaskRow(fire, tid, p.payloads[pos]))
                pos += 1

    def _shard_write(self, items: list[_Prepared]) -> tuple[list[HistoryAppend], ShardWrite]:
        w = ShardWrite(self.shard_id, self.range_id)
        appends: list[HistoryAppend] = []
        for p in items:
            appends.extend(p.appends)
            w.runs.extend(p.runs)
            if p.update.current is not None:
                w.current_runs.append(p.update.current)
            w.transfer_tasks.extend(p.transfer_rows)
            w.timer_tasks.extend(p.timer_rows)
            w.timer_outbox.extend(p.outbox_rows)
        return appends, w

    async def _write_batch(self, batch: list[_Prepared]) -> None:
        await self._gate.wait()
        async with self._write_lock:
            if self.lost:
                for p in batch:
                    _fail(p, ShardOwnershipLost(f"shard {self.shard_id} was dropped"))
                return
            if not await self._settle_for(batch) or not await self._prepare_batch(batch):
                return
            try:
                appends, write = self._shard_write(batch)
                await self._store.commit(appends, write)
                self.commits += 1
                _TRANSITIONS.inc(len(write.runs))
            except WriteOutcomeUnknown as e:
                self._outcome_unknown(batch, e)
                return
            except RunConditionFailed as e:
                if len(batch) == 1:
                    _fail(batch[0], e)
                else:
                    await self._write_one_by_one(batch)
                return
            except ShardOwnershipLost as e:
                self._lose_and_fail(batch, e)
                return
            except Exception as e:
                _fail_all(batch, _as_service_error(e, self.shard_id))
                return
            for p in batch:
                self._handoff(p)

    async def _settle_for(self, batch: list[_Prepared]) -> bool:
        """Settle an earlier unknown outcome before writing `batch`; if that fails, fail the batch
        and return False."""
        try:
            await self._settle()
        except ShardOwnershipLost as e:
            self._lose_and_fail(batch, e)
            return False
        except Exception as e:
            _fail_all(batch, Unavailable(f"shard {self.shard_id}: cannot settle an earlier write whose outcome is "
                                         f"unknown: {_as_service_error(e, self.shard_id).message}",
                                         reason="WriteOutcomeUnknown"))
            return False
        return True

    async def _prepare_batch(self, batch: list[_Prepared]) -> bool:
        """Allocate the batch's txn_id and task ids and prepare its rows; if that fails, fail the
        batch and return False."""
        n = 1 + sum(len(m.transfer) + len(m.timers) for p in batch for m in p.update.mutations)
        try:
            first = await self._allocate(n)
            txn_id = first
            ids = list(range(first + 1, first + n))
            pos = 0
            for p in batch:
                k = sum(len(m.transfer) + len(m.timers) for m in p.update.mutations)
                self._prepare(p, txn_id, ids[pos:pos + k])
                pos += k
        except ShardOwnershipLost as e:
            self._lose_and_fail(batch, e)
            return False
        except Exception as e:
            _fail_all(batch, e if isinstance(e, ServiceError) else Unavailable(f"shard {self.shard_id}: {e}"))
            return False
        return True

    async def _write_one_by_one(self, batch: list[_Prepared]) -> None:
        """One run's condition failed the whole batch: retry each update alone, so one conflict
        does not fail its neighbours."""
        for i, p in enumerate(batch):
            try:
                appends, write = self._shard_write([p])
                await self._store.commit(appends, write)
                self.commits += 1
                _TRANSITIONS.inc(len(write.runs))
            except WriteOutcomeUnknown as e:
                # Nothing more may be written before the shard settles this one.
                self._outcome_unknown(batch[i:], e, maybe_written=[p])
                return
            except ShardOwnershipLost as e:
                self._lose_and_fail(batch[i:], e)
                return
            except Exception as e:
                _fail(p, _as_service_error(e, self.shard_id))
                continue
            self._handoff(p)

    def _lose_and_fail(self, items: list[_Prepared], err: ShardOwnershipLost) -> None:
        self.lose(err)
        _fail_all(items, err)

    def _outcome_unknown(self, items: list[_Prepared], err: WriteOutcomeUnknown,
                         maybe_written: list[_Prepared] | None = None) -> None:
        """A write may or may not have taken effect: forget what the callers' runs look like,
        fail the callers (retryable), and remember to settle before the next write."""
        log.warning("shard %d: %s; the shard renews its range_id before writing again", self.shard_id, err.message)
        self._unsettled.extend(items if maybe_written is None else maybe_written)
        self._must_renew = True
        fail = Unavailable(f"shard {self.shard_id}: the store cannot tell whether a write took effect; retry "
                           f"({err.message})", reason="WriteOutcomeUnknown")
        for p in items:
            for m in p.update.mutations:
                self.evict(m.state.key)
            if p.update.current is not None:
                self.current.pop((p.update.current.row.namespace, p.update.current.row.workflow_id))
            _fail(p, fail)

    async def _settle(self) -> None:
        """After an unknown outcome: renew the range_id (the store then holds the outcome for
        good: a write still in flight with the old range_id is rejected), and hand the tasks of
        the unsettled writes that did take effect to the queue processors. A settle cut short by a
        failed read renews no more next time: it only checks the writes left."""
        if self._must_renew:
            await self._renew()
        # One at a time, each dropped only once checked: a read that fails leaves the rest (and
        # this one) for the next settle. Forgetting one that took effect would lose its tasks
        # for as long as this node owns the shard, and the ack levels would pass (and delete) them.
        while self._unsettled:
            p = self._unsettled[0]
            if await self._was_written(p):
                log.info("shard %d: a write with an unknown outcome had taken effect", self.shard_id)
                self._hand_tasks(p)
            del self._unsettled[0]

    async def _was_written(self, p: _Prepared) -> bool:
        """Whether p's write took effect, told by one of its task rows (a write is all or nothing).
        A write without tasks has nothing to hand over either way."""
        if p.transfer:
            tid = p.transfer[0].task_id
            rows = await self._store.read_transfer_tasks(self.shard_id, tid - 1, 1)
            return bool(rows) and rows[0].task_id == tid
        if p.outbox_rows:
            tid = p.outbox_rows[0].task_id
            outbox = await self._store.read_timer_outbox(self.shard_id, tid - 1, 1)
            return bool(outbox) and outbox[0].task_id == tid
        if p.timer_rows:
            t = p.timer_rows[0]
            found = await self._store.read_timer_tasks(self.shard_id, (t.fire_time_ms, t.task_id - 1),
                                                       t.fire_time_ms, 1)
            return bool(found) and found[0].task_id == t.task_id
        return False

    def _handoff(self, p: _Prepared) -> None:
        """The write is durable: give the new tasks to the processors (no re-read) and release
        the waiting caller."""
        self._hand_tasks(p)
        p.update.written = True
        _succeed(p)

    def _hand_tasks(self, p: _Prepared) -> None:
        if p.transfer:
            self.transfer.add(p.transfer)
        if p.timers:
            self.timers.add(p.timers)
        if p.far:
            self.timers.add_far(p.far)

    # ------------------------------------------------------------------ retention

    async def delete_run(self, namespace: str, workflow_id: str, run_id: str) -> None:
        """Delete a closed run from the store (ExecutionStore.delete_run) with this shard's
        range_id, between the committer's writes, and forget it. The caller holds the workflow's
        lock and has checked that the run is closed."""
        await self._gate.wait()
        async with self._write_lock:
            self.check()
            try:
                await self._settle()
                await self._store.delete_run(self.shard_id, self.range_id, namespace, workflow_id, run_id)
            except ShardOwnershipLost as e:
                self.lose(e)
                raise
            except WriteOutcomeUnknown:
                self._must_renew = True
                raise
            finally:
                self.evict((namespace, workflow_id, run_id))

    # ------------------------------------------------------------------ ack flush

    async def flush(self) -> None:
        """Persist the transfer, timer and timer outbox ack levels (range-deleting the acknowledged
        tasks, the fired timers and the published outbox rows below them) and point-delete timers
        that fired above the timer ack level, conditioned on range_id."""
        self.check()
        await self._flush()

    async def _flush(self) -> None:
        await self._gate.wait()
        async with self._write_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if self.lost:
            return
        try:
            await self._settle()
        except ShardOwnershipLost as e:
            self.lose(e)
            raise
        ack = max(self.transfer.ack_level(), self._persisted_ack)
        queue_level = self.timers.ack_level()
        timer_ack = max(queue_level or 0, self._persisted_timer_ack)
        outbox_ack = max(self.timers.outbox_ack_level() or 0, self._persisted_outbox_ack)
        deletes = self.timers.take_deletes()
        if not deletes and not self._level_passes_tombstones(timer_ack):
            # The queue's level follows the clock, but with no timer fired since the last flush
            # there is no row to range-delete below it: moving it would cost an LWT per shard per
            # flush interval on an idle cluster, for nothing.
            timer_ack = self._persisted_timer_ack
        drop_before = self.timers.take_drop_before()
        if (ack <= self._persisted_ack and timer_ack <= self._persisted_timer_ack
                and outbox_ack <= self._persisted_outbox_ack and not deletes and not drop_before):
            return
        # Raised before the write (under the write lock, so no commit is being prepared): from
        # now on no timer is written below the level about to be range-deleted.
        self._timer_floor = max(self._timer_floor, timer_ack)
        point = deletes if queue_level is None else self._point_deletes(deletes, timer_ack)
        moved = timer_ack if timer_ack > self._persisted_timer_ack else 0  # 0: no new range delete to write
        outbox_moved = outbox_ack if outbox_ack > self._persisted_outbox_ack else 0
        try:
            await self._store.update_shard(self.shard_id, self.range_id, ack, point, moved,
                                           outbox_ack_level=outbox_moved, drop_timers_before=drop_before)
        except ShardOwnershipLost as e:
            self.lose(e)
            raise
        except BaseException as e:
            if isinstance(e, WriteOutcomeUnknown):
                self._must_renew = True
            self.timers.restore_deletes(deletes)
            self.timers.restore_drop_before(drop_before)
            raise
        self._persisted_ack = ack
        self._persisted_timer_ack = timer_ack
        self._persisted_outbox_ack = outbox_ack
        if queue_level is not None:
            heap = self._tombstones_above_ack
            while heap and heap[0] < timer_ack:  # the level passed them: a scan from it skips them
                heapq.heappop(heap)
            for fire, _ in point:
                heapq.heappush(heap, fire)
        self.timers.deleted(deletes)

    def _level_passes_tombstones(self, timer_ack: int) -> bool:
        """Whether moving the level to `timer_ack` would put point-deleted timers below it (a scan
        from the new level would skip their tombstones)."""
        heap = self._tombstones_above_ack
        return bool(heap) and heap[0] < timer_ack

    def _point_deletes(self, deletes: list[tuple[int, int]], timer_ack: int) -> list[tuple[int, int]]:
        """Of the fired timers `deletes`, those to delete one by one: none below the level (its
        range delete takes them), and above it no more than the tombstone budget leaves room for
        (the earliest first: the level passes them soonest)."""
        left = sum(1 for fire in self._tombstones_above_ack if fire >= timer_ack)  # at most the budget
        above = sorted(d for d in deletes if d[0] >= timer_ack)
        return above[:max(0, MAX_TIMER_TOMBSTONES_ABOVE_ACK - left)]

    async def _flush_loop(self) -> None:
        interval = self._config.history.ack_flush_interval_ms / 1000.0
        while not self.lost and not self.closed:
            await asyncio.sleep(interval)
            try:
                await self._flush()
            except ShardOwnershipLost:
                return
            except Exception as e:
                log.warning("shard %d: ack flush failed: %s", self.shard_id, e)

    @property
    def persisted_ack_level(self) -> int:
        return self._persisted_ack

    @property
    def persisted_timer_ack_level(self) -> int:
        return self._persisted_timer_ack

    @property
    def persisted_outbox_ack_level(self) -> int:
        return self._persisted_outbox_ack


def _fail(p: _Prepared, err: BaseException) -> None:
    p.settled = True
    for fut in (p.future, p.waiter):
        if fut is not None and not fut.done():
            fut.set_exception(err)
            fut.exception()  # the waiter may be gone: don't log "exception was never retrieved"


def _succeed(p: _Prepared) -> None:
    p.settled = True
    for fut in (p.future, p.waiter):
        if fut is not None and not fut.done():
            fut.set_result(None)


def _fail_all(items: list[_Prepared], err: BaseException) -> None:
    for p in items:
        _fail(p, err)


def _as_service_error(e: BaseException, shard_id: int) -> ServiceError:
    if isinstance(e, ServiceError):
        return e
    return Unavailable(f"shard {shard_id}: store write failed: {e}", reason="StoreError")
