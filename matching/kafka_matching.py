"""Matching on Kafka (docs/queues.md, "Matching consumes").

`KafkaMatching` consumes its partitions of both task topics (`queues.matching_partitions`, empty
means all; manual assignment, consumer group `{prefix}.matching`, resuming from the committed
offsets) and puts each task on its in-memory queue (matching/queues.py), from which long-polling
workers take it once history recorded it as started. Every `commit_interval_ms` it commits, per
partition, the oldest offset not yet done (matching/offsets.py), so a restart re-reads exactly
what may not have reached a worker:

* done = handed out (recorded started), found stale by history, or parked;
* a task that waited `park_after_ms` without a poller is parked: re-published to the end of its
  partition, then counted done, so a queue nobody polls holds up no commit;
* a task whose handout failed goes back to its queue; one aborted by `stop()` stays not done;
* at most `matching_max_buffered` tasks are held in memory: above that, reading pauses until
  polls or parking have brought the count down (bounded memory; a flood of tasks for a queue
  nobody polls then delays the other queues up to `park_after_ms`).

A workflow task is offered for `sticky_wait_ms` only to the worker (poll identity) that took the
previous task of its workflow, which has the run cached; then to anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from legato import api
from legato.config import Config
from legato.errors import FailedPrecondition
from legato.kafka import decode_task, make_consumer, topics
from legato.task_publisher import KafkaTaskPublisher
from matching.node import MatchingNode
from matching.offsets import PartitionOffsets
from matching.queues import Key, Queued, task_key

log = logging.getLogger("legato.matching.kafka")

_FETCH_MS = 500
_FETCH_RECORDS = 2000
_RETRY_S = 1.0
_LAST_WORKERS = 100_000  # workflows whose last worker is remembered (sticky preference)


class _Message(Queued):
    """A task read from Kafka; done once handed out, found stale or parked."""

    __slots__ = ("finished", "offset", "offsets", "partition")

    def __init__(self, task: api.TaskInfo, since: float, offsets: PartitionOffsets, partition: int,
                 offset: int) -> None:
        super().__init__(task, since)
        self.offsets = offsets
        self.partition = partition
        self.offset = offset
        self.finished = False

    def live(self) -> bool:
        return not self.finished

    def settle(self) -> None:
        if not self.finished:
            self.finished = True
            self.offsets.done(self.offset)


class _LastWorkers:
    """Which worker took the last workflow task of a workflow (bounded, least recently used out)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._by_workflow: OrderedDict[tuple[str, str], str] = OrderedDict()

    def note(self, namespace: str, workflow_id: str, identity: str) -> None:
        key = (namespace, workflow_id)
        self._by_workflow[key] = identity
        self._by_workflow.move_to_end(key)
        if len(self._by_workflow) > self._capacity:
            self._by_workflow.popitem(last=False)

    def get(self, namespace: str, workflow_id: str) -> str | None:
        return self._by_workflow.get((namespace, workflow_id))


class KafkaMatching(MatchingNode):
    """`legato.api.MatchingService` fed by the task topics. `await start()`, then serve; `stop()`."""

    def __init__(self, history: api.HistoryService, config: Config, publisher: KafkaTaskPublisher) -> None:
        super().__init__(history, config)
        self._cfg = config.queues
        self._publisher = publisher
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._last_workers = _LastWorkers(_LAST_WORKERS)
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._round_done = asyncio.Event()  # set (and replaced) after each park-and-commit round
        self._paused = False

    def assignment(self) -> list[TopicPartition]:
        """The partitions this node consumes: `matching_partitions` (or all) of both task topics."""
        n = self._cfg.task_partitions
        parts = self._cfg.matching_partitions or list(range(n))
        bad = [p for p in parts if not 0 <= p < n]
        if bad:
            raise FailedPrecondition(f"queues.matching_partitions {bad} are not partitions of the task topics "
                                     f"(queues.task_partitions is {n})")
        t = topics(self._cfg)
        return [TopicPartition(name, p) for name in (t.workflow_tasks, t.activity_tasks) for p in parts]

    async def start(self) -> None:
        tps = self.assignment()
        consumer = make_consumer(self._cfg, f"{self._cfg.topic_prefix}.matching")
        await consumer.start()
        consumer.assign(tps)  # positions: the group's committed offsets (else the earliest)
        self._consumer = consumer
        self._offsets = {tp: PartitionOffsets() for tp in tps}
        self._tasks = [asyncio.create_task(self._consume(consumer), name="kafka-matching-consume"),
                       asyncio.create_task(self._maintain(consumer), name="kafka-matching-commit")]

    async def stop(self) -> None:
        """Stop consuming, end every poll, commit what is done."""
        self._stop_serving()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await self._commit(consumer)
            except Exception as e:
                log.warning("final offset commit failed (the uncommitted tasks will be read again): %s", e)
            await consumer.stop()

    async def add_task(self, task: api.TaskInfo) -> None:
        """Publish (the task sink of a history in the same process)."""
        self._check_running()
        await self._publisher.add_task(task)

    # ------------------------------------------------------------ consuming

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            self._flow_control(consumer)
            room = self._cfg.matching_max_buffered - self.outstanding()
            try:
                batches = await consumer.getmany(timeout_ms=_FETCH_MS, max_records=max(1, min(_FETCH_RECORDS, room)))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("reading the task topics failed, retrying in %.0fs: %s", _RETRY_S, e)
                await asyncio.sleep(_RETRY_S)
                continue
            for tp, records in batches.items():
                offsets = self._offsets[tp]
                for r in records:
                    self._accept(tp, offsets, r)

    def _accept(self, tp: TopicPartition, offsets: PartitionOffsets, record: ConsumerRecord[bytes, bytes]) -> None:
        offsets.consumed(record.offset)
        try:
            assert record.value is not None
            task = decode_task(record.value)
        except Exception as e:
            log.error("dropping unreadable message %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, e)
            offsets.done(record.offset)
            return
        now = asyncio.get_running_loop().time()
        item = _Message(task, now, offsets, tp.partition, record.offset)
        if task.kind == api.TaskKind.WORKFLOW and self._cfg.sticky_wait_ms > 0:
            item.sticky = self._last_workers.get(task.namespace, task.workflow_id)
            item.sticky_until = now + self._cfg.sticky_wait_ms / 1000.0
        self._queues.offer(task_key(task), item)

    def _flow_control(self, consumer: AIOKafkaConsumer) -> None:
        """Pause reading above `matching_max_buffered` tasks in memory; resume below 90% of it."""
        limit, held = self._cfg.matching_max_buffered, self.outstanding()
        if not self._paused and held >= limit:
            log.warning("%d tasks read and not yet done (queues.matching_max_buffered is %d): pausing reads",
                        held, limit)
            consumer.pause(*consumer.assignment())
            self._paused = True
        elif self._paused and held < limit * 0.9:
            log.info("%d tasks read and not yet done: resuming reads", held)
            consumer.resume(*consumer.assignment())
            self._paused = False

    async def _record_workflow_task(self, task: api.TaskInfo, request_id: str, identity: str) -> api.WorkflowTask:
        result = await super()._record_workflow_task(task, request_id, identity)
        if identity:
            self._last_workers.note(task.namespace, task.workflow_id, identity)
        return result

    # ------------------------------------------------------------ parking and committing

    async def _maintain(self, consumer: AIOKafkaConsumer) -> None:
        """Every commit interval: park the tasks that waited too long, then commit."""
        interval = self._cfg.commit_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._park()
                await self._commit(consumer)
                self._flow_control(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("committing task offsets failed (retrying): %s", e)
            done, self._round_done = self._round_done, asyncio.Event()
            done.set()

    async def _park(self) -> None:
        cutoff = asyncio.get_running_loop().time() - self._cfg.park_after_ms / 1000.0
        waiting = self._queues.take_waiting_since(cutoff)
        if waiting:
            log.info("parking %d task(s) nobody polled for %d ms", len(waiting), self._cfg.park_after_ms)
            await asyncio.gather(*(self._park_one(key, item) for key, item in waiting))

    async def _park_one(self, key: Key, item: Queued) -> None:
        assert isinstance(item, _Message)
        try:
            await self._publisher.republish(item.task, item.partition)
        except Exception as e:
            log.warning("parking a %s task of %s failed, it stays queued: %s", key[2].value, item.task.workflow_id, e)
            self._queues.offer(key, item, front=True)
            return
        item.settle()

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        changed: dict[TopicPartition, int] = {}
        for tp, offsets in self._offsets.items():
            at = offsets.committable()
            if at is not None and at != offsets.committed:
                changed[tp] = at
        if not changed:
            return
        await consumer.commit({tp: OffsetAndMetadata(at, "") for tp, at in changed.items()})
        for tp, at in changed.items():
            self._offsets[tp].committed = at

    # ------------------------------------------------------------ for tests and operators

    def outstanding(self) -> int:
        """Messages read and not yet done, over every partition."""
        return sum(o.outstanding for o in self._offsets.values())

    def committed(self) -> dict[TopicPartition, int]:
        """The offsets committed so far by this node."""
        return {tp: o.committed for tp, o in self._offsets.items() if o.committed is not None}

    async def next_round(self) -> dict[TopicPartition, int]:
        """Wait until the next park-and-commit round is over; the offsets committed by then."""
        await self._round_done.wait()
        return self.committed()
