"""Matching on Kafka (docs/queues.md, "Matching consumes").

`KafkaMatching` consumes partitions of both task topics with the consumer group
`{prefix}.matching`, resuming from the group's committed offsets, and puts each task on its
in-memory queue (matching/queues.py), from which long-polling workers take it once history
recorded it as started. Which partitions:

* `queues.matching_partitions` given: those (static assignment, this node alone decides);
* empty (the default): the group protocol spreads them over the live matching nodes
  (`cooperative-sticky`: a rebalance moves only the partitions that change owner). A node that
  stops leaves the group and its partitions move at once; one that dies keeps them until its
  session (`queues.matching_session_timeout_ms`) expires. On revoke, inside the rebalance
  callback, the node drops the partition's queued tasks that were not handed out (the new owner
  reads them again from the committed offset; a task being handed out meanwhile may still be
  recorded: history drops a task recorded twice), commits what is done of it and forgets it. A
  lost partition (this node's session expired) is dropped without a commit.

Every `commit_interval_ms` it commits, per partition, the oldest offset not yet done
(matching/offsets.py), so a restart (or the next owner) re-reads exactly what may not have
reached a worker:

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
from collections.abc import Coroutine
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from legato import api
from legato.config import Config
from legato.errors import FailedPrecondition
from legato.kafka import consumer_config, decode_task, topics
from legato.kafka_client import PumpedConsumer, commit_offsets, on_loop
from legato.task_publisher import KafkaTaskPublisher
from matching.node import MatchingNode
from matching.offsets import PartitionOffsets
from matching.queues import Key, Queued, task_key

log = logging.getLogger("legato.matching.kafka")

_FETCH_RECORDS = 2000
_LAST_WORKERS = 100_000  # workflows whose last worker is remembered (sticky preference)


class _Owned:
    """A partition this node reads: the offsets read and not done, and whether it was revoked."""

    __slots__ = ("offsets", "revoked")

    def __init__(self) -> None:
        self.offsets = PartitionOffsets()
        self.revoked = False


class _Message(Queued):
    """A task read from Kafka; done once handed out, found stale or parked; dropped (not live)
    once its partition is revoked."""

    __slots__ = ("finished", "offset", "owned", "partition")

    def __init__(self, task: api.TaskInfo, since: float, owned: _Owned, partition: int, offset: int) -> None:
        super().__init__(task, since)
        self.owned = owned
        self.partition = partition
        self.offset = offset
        self.finished = False

    def live(self) -> bool:
        return not self.finished and not self.owned.revoked

    def settle(self) -> None:
        if not self.finished:
            self.finished = True
            self.owned.offsets.done(self.offset)


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


def _tp(topic: str | None, partition: int | None) -> TopicPartition:
    """A partition as a dict key (no offset)."""
    return TopicPartition(topic or "", -1 if partition is None else partition)


class KafkaMatching(MatchingNode):
    """`legato.api.MatchingService` fed by the task topics. `await start()`, then serve; `stop()`."""

    def __init__(self, history: api.HistoryService, config: Config, publisher: KafkaTaskPublisher) -> None:
        super().__init__(history, config)
        self._cfg = config.queues
        self._publisher = publisher
        self._owned: dict[TopicPartition, _Owned] = {}
        self._last_workers = _LastWorkers(_LAST_WORKERS)
        self._consumer: PumpedConsumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._round_done = asyncio.Event()  # set (and replaced) after each park-and-commit round
        self._assignment_event = asyncio.Event()  # set (and replaced) when the partitions change
        self._joined = asyncio.Event()  # group mode: the first assignment came
        self._paused = False
        self._pausing: asyncio.Task[None] | None = None

    @property
    def group_mode(self) -> bool:
        """The partitions are shared by the group protocol (no `matching_partitions` given)."""
        return not self._cfg.matching_partitions

    def static_assignment(self) -> list[TopicPartition]:
        """`matching_partitions` of both task topics (checked against the partition count)."""
        n = self._cfg.task_partitions
        parts = self._cfg.matching_partitions or list(range(n))
        bad = [p for p in parts if not 0 <= p < n]
        if bad:
            raise FailedPrecondition(f"queues.matching_partitions {bad} are not partitions of the task topics "
                                     f"(queues.task_partitions is {n})")
        t = topics(self._cfg)
        return [TopicPartition(name, p) for name in (t.workflow_tasks, t.activity_tasks) for p in parts]

    def assignment(self) -> list[TopicPartition]:
        """The partitions this node consumes now (static: `matching_partitions`, or all)."""
        if not self.group_mode:
            return self.static_assignment()
        return sorted(self._owned, key=lambda tp: (tp.topic, tp.partition))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self._cfg
        conf = consumer_config(cfg, f"{cfg.topic_prefix}.matching")
        static = [] if self.group_mode else self.static_assignment()
        if self.group_mode:
            conf.update({"partition.assignment.strategy": "cooperative-sticky",
                         "session.timeout.ms": cfg.matching_session_timeout_ms,
                         "heartbeat.interval.ms": max(100, cfg.matching_session_timeout_ms // 3)})
        consumer = PumpedConsumer(conf, self._take, "matching", _FETCH_RECORDS)
        t = topics(cfg)
        try:
            if static:
                await consumer.call(lambda c: c.assign(static))  # from the committed offsets, else the earliest
                self._owned = {_tp(tp.topic, tp.partition): _Owned() for tp in static}
            else:
                await consumer.call(lambda c: c.subscribe([t.workflow_tasks, t.activity_tasks],
                                                          on_assign=self._on_assign, on_revoke=self._on_revoke,
                                                          on_lost=self._on_lost))
        except BaseException:
            await consumer.close()
            raise
        self._consumer = consumer
        consumer.read()
        self._tasks = [asyncio.create_task(self._maintain(consumer), name="kafka-matching-commit")]
        if self.group_mode:
            try:  # serve once this node is a member (it may get no partition: more nodes than partitions)
                await asyncio.wait_for(self._joined.wait(), cfg.matching_session_timeout_ms / 1000.0)
            except TimeoutError:
                log.warning("matching has not joined the consumer group %s.matching after %d ms; "
                            "it reads its partitions once it has", cfg.topic_prefix, cfg.matching_session_timeout_ms)
            except BaseException:
                await self.stop()
                raise

    async def stop(self) -> None:
        """Stop consuming, end every poll, commit what is done, leave the group."""
        self._stop_serving()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.stop_reading()
        for t in [*self._tasks, *([self._pausing] if self._pausing else [])]:
            t.cancel()
        for t in [*self._tasks, *([self._pausing] if self._pausing else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if consumer is not None:
            try:
                await self._commit(consumer)
            except Exception as e:
                log.warning("final offset commit failed (the uncommitted tasks will be read again): %s", e)
            await consumer.close()  # group mode: the revoke callback commits (again) and drops everything

    async def add_task(self, task: api.TaskInfo) -> None:
        """Publish (the task sink of a history in the same process)."""
        self._check_running()
        await self._publisher.add_task(task)

    # ------------------------------------------------------------ consuming

    def _take(self, messages: list[Message]) -> None:
        """A batch the consumer read (on the loop, in order, before any later rebalance)."""
        for m in messages:
            owned = self._owned.get(_tp(m.topic(), m.partition()))
            offset = m.offset()
            if owned is None or offset is None:
                continue  # revoked meanwhile: its next owner reads it from the committed offset
            self._accept(m, owned, offset)
        self._flow_control()

    def _accept(self, m: Message, owned: _Owned, offset: int) -> None:
        owned.offsets.consumed(offset)
        try:
            value = m.value()
            assert value is not None
            task = decode_task(value)
        except Exception as e:
            log.error("dropping unreadable message %s[%s]@%d: %s", m.topic(), m.partition(), offset, e)
            owned.offsets.done(offset)
            return
        now = asyncio.get_running_loop().time()
        item = _Message(task, now, owned, m.partition() or 0, offset)
        if task.kind == api.TaskKind.WORKFLOW and self._cfg.sticky_wait_ms > 0:
            item.sticky = self._last_workers.get(task.namespace, task.workflow_id)
            item.sticky_until = now + self._cfg.sticky_wait_ms / 1000.0
        self._queues.offer(task_key(task), item)

    def _flow_control(self) -> None:
        """Pause reading above `matching_max_buffered` tasks in memory; resume below 90% of it."""
        consumer = self._consumer
        if consumer is None:
            return
        limit, held = self._cfg.matching_max_buffered, self.outstanding()
        consumer.batch = max(1, min(_FETCH_RECORDS, limit - held))
        if not self._paused and held >= limit:
            log.warning("%d tasks read and not yet done (queues.matching_max_buffered is %d): pausing reads",
                        held, limit)
            self._set_paused(consumer, True)
        elif self._paused and held < limit * 0.9:
            log.info("%d tasks read and not yet done: resuming reads", held)
            self._set_paused(consumer, False)

    def _set_paused(self, consumer: PumpedConsumer, paused: bool) -> None:
        """Pause or resume every partition read; nothing is read until a pause is applied."""
        self._paused = paused
        previous = self._pausing
        if paused:
            consumer.hold(True)

        async def apply() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            try:
                await consumer.call(lambda c: c.pause(c.assignment()) if paused else c.resume(c.assignment()))
            except Exception as e:
                log.warning("%s reads failed: %s", "pausing" if paused else "resuming", e)
            finally:
                if paused:
                    consumer.hold(False)

        self._pausing = asyncio.create_task(apply(), name="kafka-matching-flow-control")

    async def _record_workflow_task(self, task: api.TaskInfo, request_id: str, identity: str) -> api.WorkflowTask:
        result = await super()._record_workflow_task(task, request_id, identity)
        if identity:
            self._last_workers.note(task.namespace, task.workflow_id, identity)
        return result

    # ------------------------------------------------------------ the group's rebalances
    # (librdkafka's threads, inside consume() or close(); the bookkeeping runs on the loop)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        try:
            paused = on_loop(self._loop, self._assigned, [_tp(tp.topic, tp.partition) for tp in partitions])
        except Exception as e:
            log.error("taking on partitions failed: %s", e)
            return
        if paused and partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)

    def _assigned(self, tps: list[TopicPartition]) -> bool:
        for tp in tps:
            self._owned.setdefault(tp, _Owned())  # offsets: from the committed ones (librdkafka's doing)
        if tps:
            log.info("matching: assigned %s", _names(tps))
        self._joined.set()
        self._assignment_changed()
        return self._paused

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        tps = [_tp(tp.topic, tp.partition) for tp in partitions]
        try:
            done = on_loop(self._loop, self._revoking, tps)
        except Exception as e:
            log.error("giving up partitions failed: %s", e)
            return
        committed: list[tuple[_Owned, int]] = []
        if done:
            try:
                commit_offsets(consumer, [TopicPartition(tp.topic, tp.partition, at) for tp, _, at in done])
                committed = [(owned, at) for _, owned, at in done]
            except Exception as e:
                log.warning("committing revoked partitions failed (their next owner re-reads a little more): %s", e)
        with contextlib.suppress(Exception):
            on_loop(self._loop, self._forget, tps, committed)

    def _revoking(self, tps: list[TopicPartition]) -> list[tuple[TopicPartition, _Owned, int]]:
        """Drop the partitions' queued tasks; what of each may be committed."""
        out = []
        for tp in tps:
            owned = self._owned.get(tp)
            if owned is None:
                continue
            owned.revoked = True  # its tasks still queued are no longer live
            at = owned.offsets.committable()
            if at is not None and at != owned.offsets.committed:
                out.append((tp, owned, at))
        return out

    def _forget(self, tps: list[TopicPartition], committed: list[tuple[_Owned, int]]) -> None:
        for owned, at in committed:
            owned.offsets.committed = at
        gone = [tp for tp in tps if self._owned.pop(tp, None) is not None]
        if gone:
            log.info("matching: revoked %s", _names(gone))
            self._assignment_changed()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """This node's session expired: the partitions may have other owners already; no commit."""
        assert self._loop is not None
        tps = [_tp(tp.topic, tp.partition) for tp in partitions]
        log.warning("matching: lost partitions %s (session expired)", _names(tps))
        with contextlib.suppress(Exception):
            on_loop(self._loop, self._drop, tps)

    def _drop(self, tps: list[TopicPartition]) -> None:
        self._revoking(tps)
        self._forget(tps, [])

    def _assignment_changed(self) -> None:
        event, self._assignment_event = self._assignment_event, asyncio.Event()
        event.set()

    # ------------------------------------------------------------ parking and committing

    async def _maintain(self, consumer: PumpedConsumer) -> None:
        """Every commit interval: park the tasks that waited too long, then commit."""
        interval = self._cfg.commit_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._park()
                await self._commit(consumer)
                self._flow_control()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.log(logging.INFO if _rebalancing(e) else logging.WARNING,
                        "committing task offsets failed (retrying): %s", e)
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

    async def _commit(self, consumer: PumpedConsumer) -> None:
        """Commit what is done of every partition this node reads. The offsets are taken inside the
        consumer's call, so no rebalance (which runs inside the consumer's reads) comes between
        taking them and committing them."""
        committed = await consumer.call(self._commit_now)
        for owned, at in committed:
            owned.offsets.committed = at

    def _commit_now(self, consumer: Consumer) -> list[tuple[_Owned, int]]:
        assert self._loop is not None
        changed = on_loop(self._loop, self._committable)
        if changed:
            commit_offsets(consumer, [TopicPartition(tp.topic, tp.partition, at) for tp, _, at in changed])
        return [(owned, at) for _, owned, at in changed]

    def _committable(self) -> list[tuple[TopicPartition, _Owned, int]]:
        out = []
        for tp, owned in self._owned.items():
            at = owned.offsets.committable()
            if at is not None and at != owned.offsets.committed:
                out.append((tp, owned, at))
        return out

    # ------------------------------------------------------------ for tests and operators

    def outstanding(self) -> int:
        """Messages read and not yet done, over every partition this node reads."""
        return sum(o.offsets.outstanding for o in self._owned.values())

    def committed(self) -> dict[TopicPartition, int]:
        """The offsets committed so far by this node, of the partitions it reads."""
        return {tp: o.offsets.committed for tp, o in self._owned.items() if o.offsets.committed is not None}

    async def next_round(self) -> dict[TopicPartition, int]:
        """Wait until the next park-and-commit round is over; the offsets committed by then."""
        await self._round_done.wait()
        return self.committed()

    def assignment_changed(self) -> Coroutine[Any, Any, bool]:
        """Awaitable: until this node's partitions change after this call (group mode)."""
        return self._assignment_event.wait()


def _rebalancing(e: Exception) -> bool:
    """A commit refused because the group is rebalancing (expected now and then in group mode)."""
    err = e.args[0] if isinstance(e, KafkaException) and e.args else None
    return isinstance(err, KafkaError) and err.code() in (
        KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS, KafkaError.UNKNOWN_MEMBER_ID)


def _names(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps, key=lambda tp: (tp.topic, tp.partition)))
