"""HistoryServiceImpl: `legato.api.HistoryService` over an ExecutionStore.

Every state change of a run happens under the run's (namespace, workflow_id) lock: load the
cached mutable state, apply the rules (history.engine) to a Mutation, commit it through the
shard's group committer (ONE atomic conditional write), then update the caches and wake the
long-polls waiting on that run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from history.engine import (
    WORKER_CAUSES,
    Engine,
    HistoryLimitExceeded,
    info_from_dict,
)
from history.fire_lags import merged
from history.kafka_resources import KafkaResources
from history.kafka_timers import kafka_timer_queues
from history.process_tasks import ProcessTasks, exit_message
from history.queues import TimerTask, TransferTask
from history.retention_scan import RetentionScan
from history.shard import CacheEntry, ShardContext, Update, WriteGate
from history.state import (
    PROCESS_TRANSFER_KINDS,
    STARTED,
    T_ACTIVITY_TASK,
    T_VISIBILITY,
    T_WORKFLOW_TASK,
    TM_DELETE_HISTORY,
    ActivityInfo,
    MutableState,
    Mutation,
)
from history.store.base import (
    TIMER_QUEUE_KAFKA,
    TIMER_QUEUE_STORE,
    CurrentRunRow,
    CurrentRunWrite,
    ExecutionStore,
    RunConditionFailed,
)
from history.update_queue import PendingUpdate, UpdateQueue
from legato import api, metrics
from legato.api import (
    CALLER_PID_PREFIX,
    ActivityTask,
    CancelWorkflowRequest,
    DeliverMonitoredClosedRequest,
    DescribeWorkflowResponse,
    ExecutionRef,
    GetHistoryRequest,
    GetHistoryResponse,
    GetResultRequest,
    GetResultResponse,
    IdConflictPolicy,
    IdReusePolicy,
    MonitorRegistration,
    MonitorWorkflowRequest,
    ParentInfo,
    PendingActivityInfo,
    PendingWorkflowTaskInfo,
    RecordActivityHeartbeatRequest,
    RecordActivityHeartbeatResponse,
    RecordChildClosedRequest,
    RegisterMonitorRequest,
    RegisterMonitorResponse,
    RespondActivityTaskCanceledRequest,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskCompletedResponse,
    RespondActivityTaskFailedRequest,
    RespondWorkflowTaskCompletedRequest,
    RespondWorkflowTaskCompletedResponse,
    RespondWorkflowTaskFailedRequest,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    StartWorkflowResponse,
    TaskInfo,
    TaskKind,
    TerminateWorkflowRequest,
    WorkflowStatus,
    WorkflowTask,
)
from legato.config import Config
from legato.errors import (
    AlreadyStarted,
    FailedPrecondition,
    Failure,
    InvalidArgument,
    NotFound,
    ServiceError,
    ShardOwnershipLost,
    Unavailable,
)
from legato.events import HistoryEvent
from legato.ids import new_request_id, new_run_id, shard_for
from legato.metrics import Sample
from legato.tokens import TaskToken

log = logging.getLogger("legato.history")
_WORKFLOWS_CLOSED = metrics.children(metrics.workflows_closed)
_RUNS_DELETED = metrics.children(metrics.runs_deleted)

_T = TypeVar("_T")
_CONFLICT_RETRIES = 3
# Retention: a run's deletion waits this long for the run's transfer tasks still in flight (its
# close's visibility update among them); then its timer is retried later.
RETENTION_TRANSFER_WAIT_S = 10.0
MAX_HISTORY_PAGE = 10_000
MAX_CHAIN_HOPS = 1000  # following a continue-as-new chain
RunKey = tuple[str, str, str]


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Notifier:
    """Wakes long-polls waiting for a run to change. No polling: commits resolve futures."""

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


async def _wait(fut: asyncio.Future[None], timeout_s: float) -> None:
    """Wait until `fut` (a waiter of one long-poll, nobody else's) is resolved or `timeout_s` passed."""
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, fut)
    try:
        await fut
    finally:
        timer.cancel()


class HistoryServiceImpl:
    """`legato.api.HistoryService`. Construct, `set_matching(...)`, then `await start()`.

    Workflow and activity tasks go to `task_sink` (with Kafka queues: the publisher); without
    one, to matching's `add_task` (the in-process bus)."""

    def __init__(self, store: ExecutionStore, visibility: api.VisibilityStore, config: Config, *,
                 matching: api.MatchingService | None = None, clock: Callable[[], int] | None = None,
                 identity: str = "", task_sink: api.TaskSink | None = None) -> None:
        self._store = store
        self._visibility = visibility
        self._config = config
        self._matching = matching
        self._task_sink = task_sink
        self._clock = clock or _now_ms
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._engine = Engine(config)
        self._shards: dict[int, ShardContext] = {}
        self._num_shards = config.history.num_shards
        self._updates = UpdateQueue(self._drain_updates)
        self._max_coalesced = config.history.max_coalesced_updates
        # Shared by the shards: closed while this node's ZooKeeper connection is suspended.
        self.write_gate = WriteGate()
        # The address of the node this one believes owns a shard (cluster mode: from the
        # assignment), named in the error of a request for a shard it does not own.
        self.owner_hint: Callable[[int], str] = lambda _shard_id: ""
        self._owner = ""  # recorded on each shard acquired: unique per start (see start())
        self.on_shard_lost: Callable[[int], None] | None = None  # a write found another node's range_id
        self._acquiring: set[int] = set()
        self._notifier = _Notifier()  # any committed change of a run (history long-polls)
        # a run closed or its workflow task failed: what result long-polls wait for (they are not
        # woken by every step of the run)
        self._closers = _Notifier()
        self._matching_ready: asyncio.Event | None = None
        self._started = False
        self._stopping = False
        # cross-workflow transfer tasks; they reach other runs through this interface
        self._processes = ProcessTasks(self._engine, self._update, self._ready_matching, self)
        # queues.kind kafka: the Kafka clients the shards share (timers ride on the timer topic);
        # made here from config so that whoever assembles the service only passes config. A test
        # may put its own in place before start().
        self.kafka: KafkaResources | None = KafkaResources(config.queues) if config.queues.kind == "kafka" else None

    def set_history_client(self, peer: api.HistoryService) -> None:
        """Where cross-workflow calls go (default: this service; the distributed mode routes them
        to the shard owner of the target)."""
        self._processes.peer = peer

    async def _ready_matching(self) -> api.MatchingService:
        if self._matching is None:
            assert self._matching_ready is not None
            await self._matching_ready.wait()
        assert self._matching is not None
        return self._matching

    # ================================================================== lifecycle

    def set_matching(self, matching: api.MatchingService) -> None:
        self._matching = matching
        if self._matching_ready is not None:
            self._matching_ready.set()

    async def start(self, acquire_all: bool = True) -> None:
        """Check the store's number of shards; then acquire every shard (range_id fencing), load
        their outboxes and start their processors, or, with `acquire_all=False` (a cluster node),
        none: the shard controller (history/ownership.py) acquires and releases them."""
        if self._started:
            return
        self._matching_ready = asyncio.Event()
        if self._matching is not None:
            self._matching_ready.set()
        n = self._num_shards
        stored = await self._store.init_cluster(n)
        if stored != n:
            raise FailedPrecondition(
                f"this store was created with history.num_shards = {stored}, but this node is configured with "
                f"{n}; the number of shards is fixed when a cluster is created (set history.num_shards: {stored})",
                reason="NumShardsMismatch")
        # The owner recorded on each shard is unique to this start, so that a range renewal whose
        # outcome was unknown can recognise, later, that it did take effect (ShardContext._renew).
        self._owner = f"{self.identity}#{uuid.uuid4().hex[:8]}"
        self._started = True
        if not acquire_all:
            log.info("history %s started; shards come from the cluster's assignment", self.identity)
            return
        try:
            for sid in range(n):
                await self.acquire_shard(sid)
        except BaseException:
            await self.stop()
            raise
        log.info("history %s started with %d shards", self.identity, n)

    async def acquire_shard(self, shard_id: int) -> None:
        """Own `shard_id`: range_id + 1 in the store (conditional: it fences every earlier owner),
        then load its outbox and start its processors. Raises what the store raises (the caller
        retries); a shard already owned or being acquired is left alone."""
        if not self._started or self._stopping:
            raise Unavailable("the history service is not running", reason="NotStarted")
        old = self._shards.get(shard_id)
        if (old is not None and not old.lost) or shard_id in self._acquiring:
            return
        self._acquiring.add(shard_id)
        try:
            if old is not None:  # lost earlier (fenced by another node): stop what is left of it
                await old.stop()
            info = await self._store.acquire_shard(shard_id, self._owner,
                                                   TIMER_QUEUE_KAFKA if self.kafka else TIMER_QUEUE_STORE)
            timer_queues = (kafka_timer_queues(self._config.queues, self.kafka,
                                               self._config.history.timer_fires_in_flight) if self.kafka else None)
            shard = ShardContext(info, self._store, self._config, self._clock,
                                 functools.partial(self._dispatch, shard_id), self._fire_timer, self._shard_lost,
                                 timer_queues,
                                 gate=self.write_gate, owner_hint=lambda sid: self.owner_hint(sid))
            try:
                await shard.start()
            except BaseException:
                await shard.stop()
                raise
            self._shards[shard_id] = shard
            self._start_retention_scan(shard)
        finally:
            self._acquiring.discard(shard_id)

    def retention_scan(self, shard_id: int) -> RetentionScan:
        """The retention scan (history/retention_scan.py) of a shard this node owns."""
        shard = self._shards.get(shard_id)
        if shard is None:
            raise ShardOwnershipLost(f"shard {shard_id} is not owned by this history node", reason="ShardOwnershipLost")
        return RetentionScan(shard_id, self._store, self._config.history, self._clock,
                             functools.partial(self.delete_closed_run, shard))

    def _start_retention_scan(self, shard: ShardContext) -> None:
        """The shard's retention scan passes, while this node owns it (none if the interval is 0)."""
        if self._config.history.retention_scan_interval > 0:
            shard.run_in_background(self.retention_scan(shard.shard_id).run(), "retention-scan")

    async def release_shard(self, shard_id: int, drain_timeout_s: float) -> None:
        """Hand `shard_id` over: refuse new requests for it (ShardOwnershipLost naming the owner
        this node believes in: callers retry there), let the requests in flight finish for up to
        `drain_timeout_s`, then stop its processors and persist its ack levels."""
        shard = self._shards.get(shard_id)
        if shard is None:
            return
        if not await shard.drain(drain_timeout_s):
            log.warning("shard %d: requests still running after %.1fs; releasing it anyway", shard_id,
                        drain_timeout_s)
        await shard.stop()
        if self._shards.get(shard_id) is shard:
            del self._shards[shard_id]
        self._notifier.notify_all()  # long polls of this shard look again (and are told where it went)
        self._closers.notify_all()

    def drop_all_shards(self, why: str) -> None:
        """Stop writing every shard at once, without a last write (this node's ZooKeeper session is
        gone: other nodes may own them already)."""
        for sid, shard in list(self._shards.items()):
            shard.lose(ShardOwnershipLost(f"shard {sid}: {why}", reason="ShardOwnershipLost"))

    async def forget_lost_shards(self) -> None:
        """Stop what is left of the shards this node lost (their queues' consumers, tasks)."""
        for sid, shard in list(self._shards.items()):
            if shard.lost:
                await shard.stop()
                if self._shards.get(sid) is shard:
                    del self._shards[sid]

    async def stop(self) -> None:
        if not self._started or self._stopping:
            return
        self._stopping = True
        for shard in list(self._shards.values()):
            await shard.stop()
        if self.kafka is not None:
            await self.kafka.close()
        self._notifier.notify_all()
        self._closers.notify_all()
        self._started = False
        self._stopping = False
        self._shards.clear()

    def _shard_lost(self, shard: ShardContext) -> None:
        self._notifier.notify_all()
        self._closers.notify_all()
        if self.on_shard_lost is not None:
            self.on_shard_lost(shard.shard_id)

    # ------------------------------------------------------------------ for tests and operators

    def gauges(self) -> Iterator[Sample]:
        """This node's samples of the shard and queue gauges (legato/metrics.py)."""
        shards = [s for s in self._shards.values() if not s.lost and not s.closed]
        now, now_ms = time.monotonic(), self._clock()
        pending = timers = 0
        oldest = overdue_ms = 0.0
        for s in shards:
            pending += s.transfer.inflight
            oldest = max(oldest, s.transfer.oldest_age_s(now))
            timers += s.timers.pending
            due = s.timers.next_due_ms
            if due is not None:
                overdue_ms = max(overdue_ms, float(now_ms - due))
        yield "legato_shards_owned", (), float(len(shards))
        yield "legato_transfer_tasks_pending", (), float(pending)
        yield "legato_transfer_oldest_pending_seconds", (), oldest
        yield "legato_timers_pending", (), float(timers)
        yield "legato_timer_overdue_seconds", (), overdue_ms / 1000.0

    def long_polls_waiting(self) -> int:
        """Result and history long polls waiting on this node for a run to change."""
        return self._closers.waiting() + self._notifier.waiting()

    def owned_shards(self) -> list[int]:
        return sorted(sid for sid, s in self._shards.items() if not s.lost and not s.closed)

    def shard(self, shard_id: int) -> ShardContext:
        return self._shards[shard_id]

    def shard_for(self, namespace: str, workflow_id: str) -> int:
        return shard_for(namespace, workflow_id, self._num_shards)

    async def fire_due_timers(self) -> int:
        """Fire every timer due at the clock's current time and wait for the effects."""
        total = 0
        for shard in list(self._shards.values()):
            if not shard.lost and not shard.closed:
                total += await shard.timers.fire_due()
        return total

    def poke_timers(self) -> None:
        """The clock moved (a controllable clock): let the timer processors look again."""
        for shard in self._shards.values():
            shard.timers.poke()

    def timer_fire_lags(self) -> list[int]:
        """How late the timers fired (ms after their due time), the latest ones of every owned
        shard, sorted: what `legato bench` reports as timer lag p50/p99."""
        return merged([s.timers.lags for s in self._shards.values()])

    async def flush(self) -> None:
        """Persist ack levels and delete fired timers now (normally periodic)."""
        for shard in list(self._shards.values()):
            if not shard.lost and not shard.closed:
                await shard.flush()

    async def wait_transfer_idle(self) -> None:
        for shard in list(self._shards.values()):
            await shard.transfer.wait_idle()

    async def run_transfer_task(self, shard_id: int, task: TransferTask) -> None:
        """Carry out a transfer task now (again): tasks are idempotent, redelivery is harmless."""
        await self._dispatch(shard_id, task)

    async def run_timer_task(self, task: TimerTask) -> None:
        """Fire a timer now (again), as a redelivered timer message would: history drops a timer
        its run no longer expects."""
        await self._fire_timer(task)

    # ================================================================== plumbing

    def _shard(self, namespace: str, workflow_id: str, admit: bool = True) -> ShardContext:
        """The shard of a workflow; ShardOwnershipLost when not ours. `admit`: for a new request
        (refused while the shard is handed over or writes are paused); else only checked."""
        if not self._started:
            raise Unavailable("the history service is not running", reason="NotStarted")
        sid = shard_for(namespace, workflow_id, self._num_shards)
        shard = self._shards.get(sid)
        if shard is None:
            owner = self.owner_hint(sid)
            raise ShardOwnershipLost(f"shard {sid} is not owned by this history node ({self.identity})"
                                     + (f"; its owner is {owner}" if owner else ""), reason="ShardNotOwned",
                                     owner=owner)
        if admit:
            shard.admit()
        else:
            shard.check()
        return shard

    async def _load(self, shard: ShardContext, namespace: str, workflow_id: str, run_id: str) -> CacheEntry:
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

    async def _update(self, namespace: str, workflow_id: str, run_id: str,
                      fn: Callable[[Mutation, CacheEntry], _T]) -> tuple[_T, CacheEntry]:
        """Apply `fn` to the run's state under its lock and commit what it produced (with the
        updates of the same run queued meanwhile: history/update_queue.py)."""
        self._shard(namespace, workflow_id)  # not ours: fail before queueing
        result: tuple[_T, CacheEntry] = await self._updates.submit((namespace, workflow_id), run_id, fn)
        return result

    async def _drain_updates(self, key: tuple[str, str], q: deque[PendingUpdate]) -> None:
        """Take the updates at the front of `q` aimed at one run and apply them as one write."""
        run_id = q[0].run_id
        batch: list[PendingUpdate] = []
        while q and q[0].run_id == run_id and len(batch) < self._max_coalesced:
            p = q.popleft()
            if p.live:
                batch.append(p)
        for attempt in range(_CONFLICT_RETRIES):
            batch = [p for p in batch if p.live]
            if not batch:
                return
            try:
                redo = await self._apply_updates(key, run_id, batch)
            except RunConditionFailed as e:  # somebody else wrote the run: reload and apply again
                if attempt + 1 < _CONFLICT_RETRIES:
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
            shard = self._shard(ns, wf, admit=False)  # admitted when queued
        except ServiceError as e:
            for p in batch:
                p.fail(e)
            return []
        async with shard.lock(ns, wf):
            try:
                entry = await self._load(shard, ns, wf, run_id)
            except ServiceError as e:
                for p in batch:
                    p.fail(e)
                return []
            applied, redo = self._apply_each(shard, entry, batch)
            muts = [m for _, m, _ in applied if not m.empty]
            if muts:
                m = Mutation.merged(muts)
                update = _update_of(m)
                try:
                    await shard.commit(update)
                except RunConditionFailed:
                    shard.evict(entry.state.key)
                    raise
                except (ServiceError, HistoryLimitExceeded) as e:
                    shard.evict(entry.state.key)
                    for p, _, _ in applied:
                        p.fail(e)
                    return redo
                except Exception as e:
                    shard.evict(entry.state.key)
                    log.exception("history: unexpected error committing %s/%s", wf, entry.state.run_id)
                    err = ServiceError(f"internal error in history while updating workflow {wf!r} (run "
                                       f"{entry.state.run_id}): {type(e).__name__}: {e}", reason="Internal")
                    for p, _, _ in applied:
                        p.fail(err)
                    return redo
                except BaseException:  # cancelled: the write, if any, is settled (ShardContext.commit)
                    if update.written:
                        self._after_commit(shard, entry, m)
                        for p, _, result in applied:
                            p.resolve((result, entry))
                    else:
                        shard.evict(entry.state.key)
                    raise
                self._after_commit(shard, entry, m)
            for p, _, result in applied:
                p.resolve((result, entry))
            return redo

    def _apply_each(self, shard: ShardContext, entry: CacheEntry, batch: list[PendingUpdate]
                    ) -> tuple[list[tuple[PendingUpdate, Mutation, Any]], list[PendingUpdate]]:
        """Run the batch's functions in turn on the run's state: (what applied, what to redo)."""
        applied: list[tuple[PendingUpdate, Mutation, Any]] = []
        for i, p in enumerate(batch):
            m = Mutation.of(entry.state, self._clock())
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

    def _after_commit(self, shard: ShardContext, entry: CacheEntry, m: Mutation) -> None:
        st = m.state
        entry.add_events(m.events)
        shard.runs.put(st.key, entry)
        nxt = m.successor
        if nxt is not None:  # continue-as-new, workflow retry, cron: the new run is current
            shard.runs.put(nxt.state.key, CacheEntry(nxt.state, list(nxt.events), shard.event_budget))
            shard.current.put((st.namespace, st.workflow_id), _current_row(nxt.state))
        elif m.closed:
            shard.current.put((st.namespace, st.workflow_id), _current_row(st))
        if not st.running:  # closed, continued as new or retried: a run never reopens
            shard.closed_runs.put(st.run_id, True)
        if m.closed:
            _WORKFLOWS_CLOSED(st.namespace, st.status.lower()).inc()
            metrics.history_length_at_close.observe(st.next_event_id - 1)
        self._notifier.notify(st.key)
        if m.closed or st.last_wft_failure is not None:
            self._closers.notify(st.key)

    async def _read_events(self, shard: ShardContext, entry: CacheEntry, st_key: RunKey, first: int, end: int,
                           limit: int) -> list[HistoryEvent]:
        """Committed events first <= id < end (end <= the committed next_event_id), at most `limit`."""
        end = min(end, first + limit)
        if first >= end:
            return []
        events = entry.events
        if events is not None and len(events) >= end - 1:
            return events[first - 1:end - 1]
        ns, wf, run = st_key
        out: list[HistoryEvent] = []
        pos = first
        while pos < end:
            texts = await self._store.read_history(ns, wf, run, pos, end, min(end - pos, 1000))
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

    async def _history_slice(self, shard: ShardContext, entry: CacheEntry, first: int,
                             end: int) -> list[HistoryEvent]:
        """Events first .. end-1 (the new events of a sticky workflow task)."""
        out = await self._read_events(shard, entry, entry.state.key, first, end, end - first)
        if len(out) != end - first:
            st = entry.state
            raise Unavailable(f"history of {st.workflow_id}/{st.run_id}: expected events {first} to {end - 1} in "
                              f"the store, found {len(out)}", reason="StoreError")
        return out

    async def _full_history(self, shard: ShardContext, entry: CacheEntry, end: int) -> list[HistoryEvent]:
        """Events 1 .. end-1; fills the run's event cache when it was not in memory."""
        events = entry.events
        if events is not None and len(events) >= end - 1:
            return events[:end - 1]
        st = entry.state
        out = await self._read_events(shard, entry, st.key, 1, end, end)
        if len(out) != end - 1:
            raise Unavailable(f"history of {st.workflow_id}/{st.run_id}: expected {end - 1} events in the store, "
                              f"found {len(out)}", reason="StoreError")
        if entry.events is None and entry.state.next_event_id == end and shard.runs.get(st.key) is entry:
            entry.set_events(list(out))
        return out

    # ================================================================== start / signal / terminate / cancel

    async def start_workflow(self, req: StartWorkflowRequest) -> StartWorkflowResponse:
        self._engine.validate_start(req)
        ns, wf = req.namespace, req.workflow_id
        shard = self._shard(ns, wf)
        for attempt in range(_CONFLICT_RETRIES + 1):
            async with shard.lock(ns, wf):
                if attempt == 0:
                    # Optimistic: a pointer not in the cache is assumed absent; the write's condition
                    # ("no current run") checks it, and only if that fails do we read it (as Temporal does).
                    cur = shard.current.get((ns, wf))
                else:
                    cur = await shard.get_current(ns, wf)
                old: CacheEntry | None = None
                if cur is not None:
                    if req.request_id and cur.start_request_id == req.request_id:
                        return StartWorkflowResponse(cur.run_id, started=False)
                    if cur.status == WorkflowStatus.RUNNING.value:
                        policy = IdConflictPolicy(req.id_conflict_policy)
                        if policy == IdConflictPolicy.USE_EXISTING and not req.execution_error_when_already_started:
                            await self._use_existing(shard, cur.run_id, req)
                            return StartWorkflowResponse(cur.run_id, started=False, existing=True)
                        if policy != IdConflictPolicy.TERMINATE_EXISTING:
                            because = ("execution_error_when_already_started is set"
                                       if policy == IdConflictPolicy.USE_EXISTING else "id_conflict_policy is fail")
                            raise AlreadyStarted(f"workflow {wf!r} is already running (run {cur.run_id}) in "
                                                 f"namespace {ns!r} ({because})", run_id=cur.run_id)
                        old = await self._load(shard, ns, wf, cur.run_id)
                    else:
                        why = self._engine.reuse_refused(IdReusePolicy(req.id_reuse_policy), cur.status)
                        if why:
                            raise AlreadyStarted(f"workflow {wf!r} already ran (run {cur.run_id}, {cur.status}); "
                                                 f"{why}", run_id=cur.run_id)
                now = self._clock()
                run_id = new_run_id()
                muts: list[Mutation] = []
                mo: Mutation | None = None
                if old is not None:
                    mo = Mutation.of(old.state, now)
                    self._engine.terminate_running(
                        mo, f"terminated by a new start of workflow {wf!r} (run {run_id}) with id_conflict_policy "
                            "terminate_existing", req.identity)
                    muts.append(mo)
                mn = self._engine.new_run(req, run_id, now)
                muts.append(mn)
                current = CurrentRunWrite(_current_row(mn.state), cur.run_id if cur is not None else None)
                try:
                    await shard.commit(Update(muts, current))
                except RunConditionFailed:
                    shard.current.pop((ns, wf))
                    if old is not None:
                        shard.evict(old.state.key)
                    if attempt < _CONFLICT_RETRIES:
                        continue
                    raise
                except BaseException:
                    shard.current.pop((ns, wf))
                    if old is not None:
                        shard.evict(old.state.key)
                    raise
                if old is not None and mo is not None:
                    self._after_commit(shard, old, mo)
                entry = CacheEntry(mn.state, list(mn.events), shard.event_budget)
                shard.runs.put(mn.state.key, entry)
                shard.current.put((ns, wf), _current_row(mn.state))
                return StartWorkflowResponse(run_id, started=True)
        raise Unavailable("unreachable")  # pragma: no cover

    async def _use_existing(self, shard: ShardContext, run_id: str, req: StartWorkflowRequest) -> None:
        """Deliver a use_existing start's messages, parent and monitors to the running run (the
        caller holds the workflow's lock)."""
        if not (req.start_messages or req.parent is not None or req.monitors):
            return
        entry = await self._load(shard, req.namespace, req.workflow_id, run_id)
        m = Mutation.of(entry.state, self._clock())
        try:
            self._engine.use_existing(m, req)
            if not m.empty:
                await shard.commit(_update_of(m))
        except BaseException:
            if not m.empty:
                shard.evict(entry.state.key)
            raise
        if not m.empty:
            self._after_commit(shard, entry, m)

    async def signal_workflow(self, req: SignalWorkflowRequest) -> None:
        ref = _check_ref(req.ref, "signal")
        if not isinstance(req.signal_name, str) or not req.signal_name:
            raise InvalidArgument("signal: signal_name must be a non-empty string")
        for name in ("sender", "identity", "request_id"):
            if not isinstance(getattr(req, name), str):
                raise InvalidArgument(f"signal: {name} must be a string")
        self._engine.payload(req.input, f"signal {req.signal_name!r}: input")
        await self._update(ref.namespace, ref.workflow_id, ref.run_id, lambda m, e: self._engine.signal(m, req))

    async def terminate_workflow(self, req: TerminateWorkflowRequest) -> None:
        ref = _check_ref(req.ref, "terminate")
        if not isinstance(req.reason, str):
            raise InvalidArgument("terminate: reason must be a string")
        if not isinstance(req.request_id, str):
            raise InvalidArgument("terminate: request_id must be a string")
        await self._update(ref.namespace, ref.workflow_id, ref.run_id, lambda m, e: self._engine.terminate(m, req))

    async def request_cancel_workflow(self, req: CancelWorkflowRequest) -> None:
        ref = _check_ref(req.ref, "cancel")
        if not isinstance(req.reason, str):
            raise InvalidArgument("cancel: reason must be a string")
        if not isinstance(req.request_id, str):
            raise InvalidArgument("cancel: request_id must be a string")
        if isinstance(req.deadline_ms, bool) or not isinstance(req.deadline_ms, int) or req.deadline_ms < 0:
            raise InvalidArgument(f"cancel: deadline_ms must be a whole number of milliseconds >= 0, got "
                                  f"{req.deadline_ms!r}")
        await self._update(ref.namespace, ref.workflow_id, ref.run_id,
                           lambda m, e: self._engine.request_cancel(m, req))

    # ================================================================== processes (docs/processes.md)

    async def monitor_workflow(self, req: MonitorWorkflowRequest) -> None:
        ref = _check_ref(req.ref, "monitor")
        pid = req.monitor_pid
        if not isinstance(pid, str) or not pid.startswith(CALLER_PID_PREFIX) or len(pid) < 2:
            raise InvalidArgument(f"monitor: monitor_pid must be a caller pid (starting with {CALLER_PID_PREFIX!r}), "
                                  f"got {pid!r}")
        for name in ("link", "remove"):
            if not isinstance(getattr(req, name), bool):
                raise InvalidArgument(f"monitor: {name} must be true or false")
        reg = MonitorRegistration(ref.namespace, pid, link=req.link)
        resp, _ = await self._update(ref.namespace, ref.workflow_id, ref.run_id,
                                     lambda m, e: self._engine.proc.register_monitor(m, reg, req.remove))
        closed = resp.closed
        if closed is not None and not req.remove:
            # it had closed already: the caller hears it at once
            await (await self._ready_matching()).deliver_message(pid, exit_message(closed, req.link))

    async def register_monitor(self, req: RegisterMonitorRequest) -> RegisterMonitorResponse:
        ref = _check_ref(req.ref, "register monitor")
        reg = req.monitor
        if not isinstance(reg, MonitorRegistration) or not isinstance(reg.pid, str) or not reg.pid:
            raise InvalidArgument("register monitor: monitor must be a MonitorRegistration with a pid")
        resp, _ = await self._update(ref.namespace, ref.workflow_id, ref.run_id,
                                     lambda m, e: self._engine.proc.register_monitor(m, reg, bool(req.remove)))
        return resp

    async def record_child_closed(self, req: RecordChildClosedRequest) -> None:
        p = req.parent
        try:
            await self._update(p.namespace, p.workflow_id, p.run_id,
                               lambda m, e: self._engine.proc.record_child_closed(m, req))
        except NotFound:
            return  # the parent run is gone: nobody to tell

    async def deliver_monitored_closed(self, req: DeliverMonitoredClosedRequest) -> None:
        ref = _check_ref(req.ref, "deliver monitored closed")
        run_id = ref.run_id

        def fn(m: Mutation, entry: CacheEntry) -> str:
            st = m.state
            if not st.running and st.next_run_id:
                return st.next_run_id  # links carry over to the run that continues this one
            self._engine.proc.deliver_monitored_closed(m, req)
            return ""

        for _ in range(MAX_CHAIN_HOPS):
            try:
                run_id, _ = await self._update(ref.namespace, ref.workflow_id, run_id, fn)
            except NotFound:
                return  # the monitoring run is gone
            if not run_id:
                return

    async def respond_activity_task_canceled(self, req: RespondActivityTaskCanceledRequest) -> None:
        tok = _token(req.task_token, "activity")

        def fn(m: Mutation, entry: CacheEntry) -> None:
            info = self._engine.check_activity_token(m.state, tok.scheduled_event_id, tok.attempt)
            self._engine.activity_canceled(m, info, req.details, req.identity)

        await self._update(tok.namespace, tok.workflow_id, tok.run_id, fn)

    # ================================================================== reading

    async def describe_workflow(self, ref: ExecutionRef) -> DescribeWorkflowResponse:
        ref = _check_ref(ref, "describe")
        shard = self._shard(ref.namespace, ref.workflow_id)
        async with shard.lock(ref.namespace, ref.workflow_id):
            st = (await self._load(shard, ref.namespace, ref.workflow_id, ref.run_id)).state
            return _describe(st)

    async def get_query_target(self, ref: ExecutionRef) -> api.QueryTarget:
        """Where a query about the run goes (issue 14): its task queue and the worker that has it
        cached (the sticky worker, "" when none). Read-only."""
        ref = _check_ref(ref, "query")
        shard = self._shard(ref.namespace, ref.workflow_id)
        async with shard.lock(ref.namespace, ref.workflow_id):
            st = (await self._load(shard, ref.namespace, ref.workflow_id, ref.run_id)).state
            return api.QueryTarget(st.run_id, st.workflow_type, st.task_queue, WorkflowStatus(st.status),
                                   st.sticky_identity)

    async def get_workflow_history(self, req: GetHistoryRequest) -> GetHistoryResponse:
        ref = _check_ref(req.ref, "get history")
        if not isinstance(req.first_event_id, int) or req.first_event_id < 1:
            raise InvalidArgument(f"get history: first_event_id must be >= 1, got {req.first_event_id!r}")
        page = req.page_size if isinstance(req.page_size, int) and req.page_size > 0 else 1000
        page = min(page, MAX_HISTORY_PAGE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, req.timeout_ms) / 1000.0
        run_id = ref.run_id
        while True:
            shard = self._shard(ref.namespace, ref.workflow_id)
            fut: asyncio.Future[None] | None = None
            async with shard.lock(ref.namespace, ref.workflow_id):
                entry = await self._load(shard, ref.namespace, ref.workflow_id, run_id)
                st = entry.state
                run_id = st.run_id
                end, closed = st.next_event_id, not st.running
                remaining = deadline - loop.time()
                if req.wait_new_event and req.first_event_id >= end and not closed and remaining > 0:
                    fut = self._notifier.waiter(st.key)
            if fut is None:
                events = await self._read_events(shard, entry, st.key, req.first_event_id, end, page)
                return GetHistoryResponse(run_id, events, req.first_event_id + len(events), closed)
            try:
                await _wait(fut, remaining)
            finally:
                self._notifier.discard(st.key, fut)

    async def get_workflow_result(self, req: GetResultRequest) -> GetResultResponse:
        ref = _check_ref(req.ref, "get result")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, req.timeout_ms) / 1000.0
        run_id = ref.run_id
        while True:
            shard = self._shard(ref.namespace, ref.workflow_id)
            async with shard.lock(ref.namespace, ref.workflow_id):
                st = (await self._load(shard, ref.namespace, ref.workflow_id, run_id)).state
                run_id = st.run_id
                if not st.running and st.next_run_id and not ref.run_id:
                    run_id = st.next_run_id  # without a run id: follow continue-as-new, retries and cron
                    continue
                if not st.running:
                    return GetResultResponse(
                        st.run_id, WorkflowStatus(st.status), result=st.result,
                        failure=Failure.from_dict(st.failure) if st.failure else None)
                if req.return_on_task_failure and st.last_wft_failure is not None:
                    return GetResultResponse(st.run_id, WorkflowStatus.RUNNING,
                                             task_failure=Failure.from_dict(st.last_wft_failure))
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return GetResultResponse(st.run_id, WorkflowStatus.RUNNING)
                fut = self._closers.waiter(st.key)
            try:
                await _wait(fut, remaining)
            finally:
                self._closers.discard(st.key, fut)

    # ================================================================== tasks

    async def record_workflow_task_started(self, task: TaskInfo, request_id: str, identity: str) -> WorkflowTask:
        if task.kind != TaskKind.WORKFLOW:
            raise InvalidArgument(f"record_workflow_task_started got a {task.kind} task")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidArgument("record_workflow_task_started: request_id must be a non-empty string")

        def fn(m: Mutation, entry: CacheEntry) -> tuple[int, int, int, int, list[HistoryEvent]]:
            st = m.state
            where = f"workflow task (scheduled event {task.scheduled_event_id}) of {st.workflow_id}/{st.run_id}"
            if not st.running:
                raise NotFound(f"{where}: the run is already closed ({st.status})", reason="WorkflowClosed")
            w = st.wft
            if w is None or w.scheduled_event_id != task.scheduled_event_id or w.attempt != task.attempt:
                raise NotFound(f"{where}: the task is no longer pending (stale task)", reason="StaleTask")
            if w.state == STARTED:
                if w.request_id == request_id:  # the same poll again: the same task
                    return (w.started_event_id, w.attempt, st.last_completed_wft_started_id,
                            _first_event_for(st, identity), self._engine.transient_events(st))
                raise FailedPrecondition(f"{where}: already started by another poller ({w.identity or 'unknown'})",
                                         reason="TaskAlreadyStarted")
            started = self._engine.wft_started(m, request_id, identity)
            return (started, w.attempt, st.last_completed_wft_started_id, _first_event_for(st, identity),
                    self._engine.transient_events(st))

        (started, attempt, previous, first, tail), entry = await self._update(task.namespace, task.workflow_id,
                                                                              task.run_id, fn)
        return await self._workflow_task(entry, task.scheduled_event_id, started, attempt, previous, first, tail)

    async def _workflow_task(self, entry: CacheEntry, scheduled: int, started: int, attempt: int,
                             previous: int, first: int = 1, tail: list[HistoryEvent] | None = None) -> WorkflowTask:
        """The task to hand out for a workflow task just recorded as started, with the history from
        event `first` (1, or just after the last task the worker that has the run cached completed).
        `tail`: the events of a transient task (docs/protocol.md), which end the history."""
        st = entry.state
        shard = self._shard(st.namespace, st.workflow_id)
        end = tail[0].event_id if tail else started + 1
        if first > 1:
            history = await self._history_slice(shard, entry, first, end)
        else:
            history = await self._full_history(shard, entry, end)
        if tail:
            history = history + tail
        token = TaskToken("workflow", st.namespace, st.workflow_id, st.run_id, scheduled, started, attempt).encode()
        return WorkflowTask(task_token=token, namespace=st.namespace, workflow_id=st.workflow_id, run_id=st.run_id,
                            workflow_type=st.workflow_type, task_queue=st.task_queue, attempt=attempt,
                            started_event_id=started, previous_started_event_id=previous, history=history)

    async def record_activity_task_started(self, task: TaskInfo, request_id: str, identity: str) -> ActivityTask:
        if task.kind != TaskKind.ACTIVITY:
            raise InvalidArgument(f"record_activity_task_started got a {task.kind} task")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidArgument("record_activity_task_started: request_id must be a non-empty string")

        def fn(m: Mutation, entry: CacheEntry) -> dict[str, Any]:
            st = m.state
            where = (f"activity task (scheduled event {task.scheduled_event_id}, attempt {task.attempt}) of "
                     f"{st.workflow_id}/{st.run_id}")
            if not st.running:
                raise NotFound(f"{where}: the run is already closed ({st.status})", reason="WorkflowClosed")
            info = st.activities.get(task.scheduled_event_id)
            if info is None:
                raise NotFound(f"{where}: the activity is no longer pending (stale task)", reason="StaleTask")
            if info.attempt != task.attempt:
                raise NotFound(f"{where}: stale attempt (the activity is at attempt {info.attempt})",
                               reason="StaleTask")
            if info.state == STARTED:
                if info.request_id != request_id:
                    raise FailedPrecondition(f"{where}: already started by another poller "
                                             f"({info.identity or 'unknown'})", reason="TaskAlreadyStarted")
            elif info.state != "SCHEDULED":
                raise NotFound(f"{where}: the activity is waiting to retry (stale task)", reason="StaleTask")
            else:
                self._engine.activity_started(m, info, request_id, identity)
            return {"activity_id": info.activity_id, "activity_type": info.activity_type,
                    "task_queue": info.task_queue, "attempt": info.attempt,
                    "scheduled": info.attempt_scheduled_time_ms, "started": info.started_time_ms,
                    "stc": info.start_to_close_ms, "hb": info.heartbeat_ms, "details": info.heartbeat_details,
                    "next": st.next_event_id}

        snap, entry = await self._update(task.namespace, task.workflow_id, task.run_id, fn)
        shard = self._shard(task.namespace, task.workflow_id)
        st = entry.state
        sched = task.scheduled_event_id
        evs = await self._read_events(shard, entry, st.key, sched, snap["next"], 1)
        if not evs or evs[0].event_id != sched:
            raise Unavailable(f"activity task of {st.workflow_id}/{st.run_id}: its ActivityTaskScheduled event "
                              f"{sched} is missing", reason="StoreError")
        attrs = evs[0].attrs
        token = TaskToken("activity", st.namespace, st.workflow_id, st.run_id, sched, 0, snap["attempt"]).encode()
        return ActivityTask(
            task_token=token, namespace=st.namespace, workflow_id=st.workflow_id, run_id=st.run_id,
            workflow_type=st.workflow_type, activity_id=snap["activity_id"], activity_type=snap["activity_type"],
            task_queue=snap["task_queue"], input=list(attrs.get("input") or []), attempt=snap["attempt"],
            scheduled_time_ms=snap["scheduled"], started_time_ms=snap["started"],
            start_to_close_timeout_ms=snap["stc"], heartbeat_timeout_ms=snap["hb"],
            heartbeat_details=snap["details"], context=dict(attrs.get("context") or {}))

    async def respond_workflow_task_completed(
            self, req: RespondWorkflowTaskCompletedRequest) -> RespondWorkflowTaskCompletedResponse:
        tok = _token(req.task_token, "workflow")

        def fn(m: Mutation, entry: CacheEntry) -> tuple[ServiceError | None, list[ActivityTask]]:
            self._engine.check_wft_token(m.state, tok.scheduled_event_id, tok.started_event_id, tok.attempt)
            err = self._engine.complete_wft(m, req.commands, req.identity)
            return err, [_eager_task(m.state, info, attrs) for info, attrs in m.eager]

        try:
            (err, eager), _ = await self._update(tok.namespace, tok.workflow_id, tok.run_id, fn)
        except HistoryLimitExceeded as e:
            message = e.message

            def terminate(m: Mutation, entry: CacheEntry) -> None:
                self._engine.check_wft_token(m.state, tok.scheduled_event_id, tok.started_event_id, tok.attempt)
                self._engine.terminate_for_history_limit(m, message, req.identity)

            await self._update(tok.namespace, tok.workflow_id, tok.run_id, terminate)
            return RespondWorkflowTaskCompletedResponse()
        if err is not None:
            raise err
        return RespondWorkflowTaskCompletedResponse(activity_tasks=eager)

    async def respond_workflow_task_failed(self, req: RespondWorkflowTaskFailedRequest) -> None:
        tok = _token(req.task_token, "workflow")
        if req.cause not in WORKER_CAUSES:
            raise InvalidArgument(f"respond workflow task failed: unknown cause {req.cause!r} (use one of "
                                  f"{', '.join(sorted(WORKER_CAUSES))})")
        if not isinstance(req.failure, Failure):
            raise InvalidArgument("respond workflow task failed: failure must be a Failure")

        def fn(m: Mutation, entry: CacheEntry) -> None:
            self._engine.check_wft_token(m.state, tok.scheduled_event_id, tok.started_event_id, tok.attempt)
            self._engine.fail_wft(m, req.cause, req.failure, req.identity)

        await self._update(tok.namespace, tok.workflow_id, tok.run_id, fn)

    async def respond_activity_task_completed(
            self, req: RespondActivityTaskCompletedRequest) -> RespondActivityTaskCompletedResponse:
        tok = _token(req.task_token, "activity")
        request_id = new_request_id() if req.return_workflow_task is True else ""

        def fn(m: Mutation, entry: CacheEntry) -> tuple[int, int, int, int, int]:
            info = self._engine.check_activity_token(m.state, tok.scheduled_event_id, tok.attempt)
            self._engine.activity_completed(m, info, req.result, req.identity)
            if request_id:
                # The caller has the run cached: the workflow task this completion scheduled (if it
                # did) is started for it now, in this same write, instead of going through matching.
                w = self._engine.start_new_wft(m, request_id, req.identity)
                if w is not None:
                    st = m.state
                    return (w.scheduled_event_id, w.started_event_id, w.attempt, st.last_completed_wft_started_id,
                            _first_event_for(st, req.identity))
            return 0, 0, 0, 0, 1

        (sched, started, attempt, previous, first), entry = await self._update(tok.namespace, tok.workflow_id,
                                                                                tok.run_id, fn)
        if not started:
            return RespondActivityTaskCompletedResponse()
        return RespondActivityTaskCompletedResponse(
            workflow_task=await self._workflow_task(entry, sched, started, attempt, previous, first))

    async def respond_activity_task_failed(self, req: RespondActivityTaskFailedRequest) -> None:
        tok = _token(req.task_token, "activity")
        if not isinstance(req.failure, Failure):
            raise InvalidArgument("respond activity task failed: failure must be a Failure")

        def fn(m: Mutation, entry: CacheEntry) -> None:
            info = self._engine.check_activity_token(m.state, tok.scheduled_event_id, tok.attempt)
            self._engine.activity_failed(m, info, req.failure, req.identity)

        await self._update(tok.namespace, tok.workflow_id, tok.run_id, fn)

    async def record_activity_heartbeat(self, req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse:
        tok = _token(req.task_token, "activity")

        def fn(m: Mutation, entry: CacheEntry) -> bool:
            info = self._engine.check_activity_token(m.state, tok.scheduled_event_id, tok.attempt)
            self._engine.heartbeat(m, info, req.details)
            return info.cancel_requested

        cancel, _ = await self._update(tok.namespace, tok.workflow_id, tok.run_id, fn)
        return RecordActivityHeartbeatResponse(cancel_requested=cancel)

    # ================================================================== queue callbacks

    async def _dispatch(self, shard_id: int, t: TransferTask) -> None:
        d = t.data
        k = d["k"]
        if k == T_VISIBILITY:
            await self._visibility.upsert(info_from_dict(d["info"]))
            return
        if k in PROCESS_TRANSFER_KINDS:
            await self._processes.run(d)
            return
        if k not in (T_WORKFLOW_TASK, T_ACTIVITY_TASK):
            log.error("shard %d: dropping transfer task %d of unknown kind %r", shard_id, t.task_id, k)
            return
        sink = self._task_sink or await self._ready_matching()
        info = TaskInfo(kind=TaskKind.WORKFLOW if k == T_WORKFLOW_TASK else TaskKind.ACTIVITY, namespace=d["ns"],
                        task_queue=d["tq"], workflow_id=d["wf"], run_id=d["run"], scheduled_event_id=d["sched"],
                        shard_id=shard_id, task_id=t.task_id, attempt=d["attempt"], created_ms=d.get("c", 0))
        try:
            await sink.add_task(info)
        except (NotFound, FailedPrecondition):
            return  # stale: nothing to deliver

    async def _fire_timer(self, t: TimerTask) -> None:
        d = t.data
        if d["k"] == TM_DELETE_HISTORY:
            await self._delete_closed_run(t)
            return
        if d["run"] in self._shard(d["ns"], d["wf"], admit=False).closed_runs:
            return  # a closed run expects no timer (engine.on_timer): no need to read it back
        try:
            await self._update(d["ns"], d["wf"], d["run"], lambda m, e: self._engine.on_timer(m, d))
        except NotFound:
            return  # the run is gone: nothing expects the timer

    async def _delete_closed_run(self, t: TimerTask) -> None:
        """Retention: the run's time is up (its close wrote this timer)."""
        d = t.data
        await self.delete_closed_run(self._shard(d["ns"], d["wf"]), d["ns"], d["wf"], d["run"], int(d.get("st", 0)))

    async def delete_closed_run(self, shard: ShardContext, ns: str, wf: str, run_id: str, start_time_ms: int) -> bool:
        """Delete a closed run (its retention timer fired, or the retention scan found it past its
        retention). Under the workflow's lock (a start of the same workflow id waits, or went
        first and moved the current-run pointer): the run's visibility record, then its events,
        then its run row and the pointer if it still names the run. Each step is idempotent, so a
        timer fired twice, or again after a crash halfway, finishes the job. Whether a run row was
        there to delete (an open run is never deleted: False)."""
        # The run's transfer tasks (the close's visibility upsert among them) are done first: a
        # late upsert would bring the visibility record back.
        if not await shard.transfer.wait_run_done(run_id, RETENTION_TRANSFER_WAIT_S):
            raise Unavailable(f"deleting run {run_id} of workflow {wf!r} waits for its transfer tasks (its "
                              "visibility record among them)", reason="RetentionWaits")
        async with shard.lock(ns, wf):
            row = await self._store.get_run(shard.shard_id, ns, wf, run_id)
            shard.check()
            if row is not None:
                st = MutableState.decode(row.state)
                if st.running:  # a run never reopens; never delete an open run
                    log.error("shard %d: retention for run %s of %r, which is open: not deleted",
                              shard.shard_id, run_id, wf)
                    return False
                start_time_ms = st.start_time_ms
            await self._visibility.delete(ns, run_id, start_time_ms)
            await shard.delete_run(ns, wf, run_id)
        _RUNS_DELETED(ns).inc()
        return row is not None


# ====================================================================== helpers

def _update_of(m: Mutation) -> Update:
    """The atomic write of a run's mutation (with the run that continues it, if any)."""
    nxt = m.successor
    if nxt is not None:
        return Update([m, nxt], CurrentRunWrite(_current_row(nxt.state), m.state.run_id))
    return Update([m], CurrentRunWrite(_current_row(m.state), m.state.run_id) if m.closed else None)


def _first_event_for(st: MutableState, identity: str) -> int:
    """The first event the workflow task for poller `identity` carries: the one after the last
    task it completed when it has the run cached (sticky, as Temporal does), else 1. A worker that
    lost the run meanwhile reads the rest itself (worker.py, `_with_full_history`)."""
    previous = st.last_completed_wft_started_id
    if identity and previous and st.sticky_identity == identity:
        return previous + 1
    return 1


def _current_row(st: MutableState) -> CurrentRunRow:
    return CurrentRunRow(st.namespace, st.workflow_id, st.run_id, st.status, st.start_request_id, st.start_time_ms)


def _eager_task(st: MutableState, info: ActivityInfo, attrs: dict[str, Any]) -> ActivityTask:
    """The task of an activity started eagerly (`attrs`: its ActivityTaskScheduled attributes)."""
    sched = info.scheduled_event_id
    token = TaskToken("activity", st.namespace, st.workflow_id, st.run_id, sched, 0, info.attempt).encode()
    return ActivityTask(
        task_token=token, namespace=st.namespace, workflow_id=st.workflow_id, run_id=st.run_id,
        workflow_type=st.workflow_type, activity_id=info.activity_id, activity_type=info.activity_type,
        task_queue=info.task_queue, input=list(attrs.get("input") or []), attempt=info.attempt,
        scheduled_time_ms=info.attempt_scheduled_time_ms, started_time_ms=info.started_time_ms,
        start_to_close_timeout_ms=info.start_to_close_ms, heartbeat_timeout_ms=info.heartbeat_ms,
        heartbeat_details=info.heartbeat_details, context=dict(attrs.get("context") or {}))


def _check_ref(ref: ExecutionRef, what: str) -> ExecutionRef:
    if not isinstance(ref, ExecutionRef):
        raise InvalidArgument(f"{what}: expected an execution reference")
    for value, name in ((ref.namespace, "namespace"), (ref.workflow_id, "workflow_id")):
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{what}: {name} must be a non-empty string")
    if not isinstance(ref.run_id, str):
        raise InvalidArgument(f"{what}: run_id must be a string")
    return ref


def _token(raw: bytes, kind: str) -> TaskToken:
    if not isinstance(raw, bytes | bytearray) or not raw:
        raise InvalidArgument("task_token must be non-empty bytes")
    tok = TaskToken.decode(bytes(raw))
    if tok.kind != kind:
        raise InvalidArgument(f"expected a {kind} task token, got a {tok.kind} one")
    for name in ("namespace", "workflow_id", "run_id"):
        if not isinstance(getattr(tok, name), str) or not getattr(tok, name):
            raise InvalidArgument(f"malformed task token: {name} is missing")
    for name in ("scheduled_event_id", "started_event_id", "attempt"):
        if not isinstance(getattr(tok, name), int):
            raise InvalidArgument(f"malformed task token: {name} is not a number")
    return tok


def _describe(st: MutableState) -> DescribeWorkflowResponse:
    w = st.wft
    pending_wft = None
    if w is not None:
        pending_wft = PendingWorkflowTaskInfo(scheduled_event_id=w.scheduled_event_id, state=w.state,
                                              attempt=w.attempt, scheduled_time_ms=w.scheduled_time_ms,
                                              started_time_ms=w.started_time_ms)
    acts = [PendingActivityInfo(
        activity_id=a.activity_id, activity_type=a.activity_type, scheduled_event_id=a.scheduled_event_id,
        state=a.state, attempt=a.attempt, last_failure=Failure.from_dict(a.last_failure) if a.last_failure else None,
        scheduled_time_ms=a.attempt_scheduled_time_ms, last_started_time_ms=a.started_time_ms)
        for a in st.activities.values()]
    return DescribeWorkflowResponse(
        info=st.info(), pending_activities=acts, pending_workflow_task=pending_wft,
        last_workflow_task_failure=Failure.from_dict(st.last_wft_failure) if st.last_wft_failure else None,
        pending_timers=len(st.timers), result=st.result,
        failure=Failure.from_dict(st.failure) if st.failure else None,
        parent=ParentInfo.from_dict(st.parent) if st.parent else None)


__all__ = ["HistoryServiceImpl", "ServiceError"]
