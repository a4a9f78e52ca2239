"""HistoryServiceImpl: `legato.api.HistoryService` over an ExecutionStore.

This module owns the shards (acquiring, releasing, losing them), their queue processors'
callbacks (a transfer task dispatched, a timer fired) and the service's lifecycle. Each operation
is a module of history/api/ (one per verb or family of verbs), over the shared load-modify-commit
helper `history.api.access.RunAccess`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator

from history.api import (
    activity_tasks,
    delete_run,
    process_links,
    reads,
    run_requests,
    start_workflow,
    workflow_tasks,
)
from history.api.access import RunAccess
from history.engine import Engine, info_from_dict
from history.fire_lags import merged
from history.kafka_resources import KafkaResources
from history.kafka_timers import kafka_timer_queues
from history.process_tasks import ProcessTasks
from history.queues import TimerTask, TransferTask
from history.retention_scan import RetentionScan
from history.shard import ShardContext, WriteGate
from history.state import (
    PROCESS_TRANSFER_KINDS,
    T_ACTIVITY_TASK,
    T_VISIBILITY,
    T_WORKFLOW_TASK,
    TM_DELETE_HISTORY,
)
from history.store.base import TIMER_QUEUE_KAFKA, TIMER_QUEUE_STORE, ExecutionStore
from legato import api
from legato.api import (
    ActivityTask,
    CancelWorkflowRequest,
    DeliverMonitoredClosedRequest,
    DescribeWorkflowResponse,
    ExecutionRef,
    GetHistoryRequest,
    GetHistoryResponse,
    GetResultRequest,
    GetResultResponse,
    MonitorWorkflowRequest,
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
    WorkflowTask,
)
from legato.config import Config
from legato.errors import FailedPrecondition, NotFound, ServiceError, ShardOwnershipLost, Unavailable
from legato.ids import shard_for
from legato.metrics import Sample

log = logging.getLogger("legato.history")


def _now_ms() -> int:
    return int(time.time() * 1000)


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
        # the load-modify-commit helper of every operation (history/api/)
        self.runs = RunAccess(store, self._engine, self._clock, self._shard, config.history.max_coalesced_updates)
        # Shared by the shards: closed while this node's ZooKeeper connection is suspended.
        self.write_gate = WriteGate()
        # The address of the node this one believes owns a shard (cluster mode: from the
        # assignment), named in the error of a request for a shard it does not own.
        self.owner_hint: Callable[[int], str] = lambda _shard_id: ""
        self._owner = ""  # recorded on each shard acquired: unique per start (see start())
        self.on_shard_lost: Callable[[int], None] | None = None  # a write found another node's range_id
        self._acquiring: set[int] = set()
        self._matching_ready: asyncio.Event | None = None
        self._started = False
        self._stopping = False
        # cross-workflow transfer tasks; they reach other runs through this interface
        self._processes = ProcessTasks(self._engine, self.runs.update, self._ready_matching, self)
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
                                               self._config.history.timer_fires_in_flight, self._timer_obsolete)
                            if self.kafka else None)
            shard = ShardContext(info, self._store, self._config, self._clock,
                                 functools.partial(self._dispatch, shard_id), self._fire_timer, self._shard_lost,
                                 timer_queues,
                                 gate=self.write_gate, owner_hint=lambda sid: self.owner_hint(sid),
                                 timer_obsolete=self._timer_obsolete)
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
        self.runs.notify_all()  # long polls of this shard look again (and are told where it went)

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
        self.runs.notify_all()
        self._started = False
        self._stopping = False
        self._shards.clear()

    def _shard_lost(self, shard: ShardContext) -> None:
        self.runs.notify_all()
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
        return self.runs.closers.waiting() + self.runs.changes.waiting()

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

    # ================================================================== operations (history/api/)

    async def start_workflow(self, req: StartWorkflowRequest) -> StartWorkflowResponse:
        return await start_workflow.start_workflow(self.runs, req)

    async def signal_workflow(self, req: SignalWorkflowRequest) -> None:
        await run_requests.signal_workflow(self.runs, req)

    async def terminate_workflow(self, req: TerminateWorkflowRequest) -> None:
        await run_requests.terminate_workflow(self.runs, req)

    async def request_cancel_workflow(self, req: CancelWorkflowRequest) -> None:
        await run_requests.request_cancel_workflow(self.runs, req)

    async def monitor_workflow(self, req: MonitorWorkflowRequest) -> None:
        await process_links.monitor_workflow(self.runs, req, self._ready_matching)

    async def register_monitor(self, req: RegisterMonitorRequest) -> RegisterMonitorResponse:
        return await process_links.register_monitor(self.runs, req)

    async def record_child_closed(self, req: RecordChildClosedRequest) -> None:
        await process_links.record_child_closed(self.runs, req)

    async def deliver_monitored_closed(self, req: DeliverMonitoredClosedRequest) -> None:
        await process_links.deliver_monitored_closed(self.runs, req)

    async def describe_workflow(self, ref: ExecutionRef) -> DescribeWorkflowResponse:
        return await reads.describe_workflow(self.runs, ref)

    async def get_query_target(self, ref: ExecutionRef) -> api.QueryTarget:
        return await reads.get_query_target(self.runs, ref)

    async def get_workflow_history(self, req: GetHistoryRequest) -> GetHistoryResponse:
        return await reads.get_workflow_history(self.runs, req)

    async def get_workflow_result(self, req: GetResultRequest) -> GetResultResponse:
        return await reads.get_workflow_result(self.runs, req)

    async def record_workflow_task_started(self, task: TaskInfo, request_id: str, identity: str) -> WorkflowTask:
        return await workflow_tasks.record_workflow_task_started(self.runs, task, request_id, identity)

    async def respond_workflow_task_completed(
            self, req: RespondWorkflowTaskCompletedRequest) -> RespondWorkflowTaskCompletedResponse:
        return await workflow_tasks.respond_workflow_task_completed(self.runs, req)

    async def respond_workflow_task_failed(self, req: RespondWorkflowTaskFailedRequest) -> None:
        await workflow_tasks.respond_workflow_task_failed(self.runs, req)

    async def record_activity_task_started(self, task: TaskInfo, request_id: str, identity: str) -> ActivityTask:
        return await activity_tasks.record_activity_task_started(self.runs, task, request_id, identity)

    async def respond_activity_task_completed(
            self, req: RespondActivityTaskCompletedRequest) -> RespondActivityTaskCompletedResponse:
        return await activity_tasks.respond_activity_task_completed(self.runs, req)

    async def respond_activity_task_failed(self, req: RespondActivityTaskFailedRequest) -> None:
        await activity_tasks.respond_activity_task_failed(self.runs, req)

    async def respond_activity_task_canceled(self, req: RespondActivityTaskCanceledRequest) -> None:
        await activity_tasks.respond_activity_task_canceled(self.runs, req)

    async def record_activity_heartbeat(self, req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse:
        return await activity_tasks.record_activity_heartbeat(self.runs, req)


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
            await self.runs.update(d["ns"], d["wf"], d["run"], lambda m, e: self._engine.on_timer(m, d))
        except NotFound:
            return  # the run is gone: nothing expects the timer

    def _timer_obsolete(self, t: TimerTask) -> bool:
        """Whether no run will ever expect timer `t` (its publisher then never sends it): judged
        on the run's committed state in this node's cache; False when the run is not cached, is
        being changed, or its shard is not (or no longer) this node's."""
        d = t.data
        if d["k"] == TM_DELETE_HISTORY:
            return False
        try:
            shard = self._shard(d["ns"], d["wf"], admit=False)
        except ServiceError:
            return False
        if d["run"] in shard.closed_runs:
            return True
        st = shard.settled_state(d["ns"], d["wf"], d["run"])
        return st is not None and self._engine.timer_obsolete(st, d)

    async def _delete_closed_run(self, t: TimerTask) -> None:
        """Retention: the run's time is up (its close wrote this timer)."""
        d = t.data
        await self.delete_closed_run(self._shard(d["ns"], d["wf"]), d["ns"], d["wf"], d["run"], int(d.get("st", 0)))

    async def delete_closed_run(self, shard: ShardContext, ns: str, wf: str, run_id: str, start_time_ms: int) -> bool:
        """Retention (history/api/delete_run.py): delete a closed run; whether a run row was there."""
        return await delete_run.delete_closed_run(self._store, self._visibility, shard, ns, wf, run_id, start_time_ms)


__all__ = ["HistoryServiceImpl", "ServiceError"]
