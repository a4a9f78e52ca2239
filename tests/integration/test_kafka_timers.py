"""Timers on Kafka (docs/queues.md, "History publishes" and "The shard owner fires timers"),
against the real broker: history services with queues.kind = kafka on a SQLite file, topics of
their own, and a controllable clock (timers fire when the clock says so, never before).

Waiting is done by `fire_due`, which returns once the shard's queue has read everything it
published and what its effects published; no test sleeps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions, TopicPartition

from history.kafka_resources import KafkaResources
from history.kafka_timers import KafkaTimerQueue
from history.service import HistoryServiceImpl
from history.store.factory import open_stores
from legato import codec
from legato.api import (
    ExecutionRef,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskFailedRequest,
    SignalWorkflowRequest,
)
from legato.commands import CommandType
from legato.config import Config, QueuesConfig
from legato.errors import Failure, ShardOwnershipLost
from legato.events import EventType as E
from legato.kafka import TimerMessage, base_config, create_topics, encode_timer, make_producer, open_admin, topics
from legato.kafka_admin import delete_topics
from tests.unit.history.conftest import (
    T0,
    Env,
    FakeClock,
    FakeMatching,
    activity,
    cmd,
    complete_wf,
    count_in_flight,
    make_config,
    timer,
)

pytestmark = pytest.mark.timeout(120)
WAIT_S = 30.0  # safety net for waits on the broker; never reached when tests pass


class GatedKafka(KafkaResources):
    """The real producer, but messages go to the broker only while `sending` is set, and
    acknowledgements reach the queue only while `gate` is open."""

    def __init__(self, cfg: QueuesConfig) -> None:
        super().__init__(cfg)
        self.sending = asyncio.Event()
        self.sending.set()
        self.gate = asyncio.Event()
        self.gate.set()
        self.broker_has = 0  # messages the broker acknowledged (whether or not passed on yet)
        self.sent = asyncio.Event()
        self.held_back = asyncio.Event()  # a message waits for `sending`

    async def send(self, topic: str, partition: int, key: bytes, value: bytes) -> int:
        if not self.sending.is_set():
            self.held_back.set()
        await self.sending.wait()
        offset = await super().send(topic, partition, key, value)
        self.broker_has += 1
        self.sent.set()
        await self.gate.wait()
        return offset


@pytest.fixture
async def queues(kafka_node: str) -> AsyncIterator[QueuesConfig]:
    """Topics of this test's own (a fresh prefix), deleted afterwards."""
    cfg = QueuesConfig(kind="kafka", kafka_bootstrap=[kafka_node], topic_prefix=f"t-{uuid.uuid4().hex[:12]}",
                       task_partitions=1, timer_partitions=2, commit_interval_ms=50)
    await create_topics(cfg)
    try:
        yield cfg
    finally:
        await delete_topics(cfg)


def kafka_config(queues: QueuesConfig, **q: Any) -> Config:
    cfg = make_config()
    cfg.queues = queues.model_copy(update=q)
    return cfg


async def kafka_env(cfg: Config, path: Path, clock: FakeClock | None = None, identity: str = "h1",
                    kafka: KafkaResources | None = None) -> Env:
    """A history service with Kafka timers on the SQLite file `path` (started)."""
    stores = await open_stores(cfg, str(path))
    clk = clock or FakeClock()
    m = FakeMatching()
    h = HistoryServiceImpl(stores.execution, stores.visibility, cfg, clock=clk, identity=identity)
    if kafka is not None:
        h.kafka = kafka
    h.set_matching(m)
    await h.start()
    env = Env(h, stores.execution, stores.visibility, m, clk, cfg)
    await env.fire()  # every shard's queue is reading and has published what the store held
    return env


async def stop_env(env: Env) -> None:
    await env.history.stop()
    await env.store.close()


async def crash_env(env: Env) -> None:
    """Stop like a killed node: no last flush of the store, no last offset commit."""
    for sid in env.history.owned_shards():
        env.history.shard(sid).lose(ShardOwnershipLost("simulated crash"))
    await stop_env(env)


def queue(env: Env, workflow_id: str) -> KafkaTimerQueue:
    return queue_of_shard(env, env.history.shard_for("default", workflow_id))


def queue_of_shard(env: Env, shard_id: int) -> KafkaTimerQueue:
    q = env.history.shard(shard_id).timers
    assert isinstance(q, KafkaTimerQueue)
    return q


async def stored_timers(env: Env, workflow_id: str = "") -> list[int]:
    """Task ids of the timer rows in the store, the outbox's and any others (of one workflow's
    shard, or all shards)."""
    sids = [env.history.shard_for("default", workflow_id)] if workflow_id else env.history.owned_shards()
    out = []
    for sid in sids:
        out += [r.task_id for r in await env.store.read_timer_outbox(sid, 0, 10_000)]
        out += [r.task_id for r in await env.store.read_timer_tasks(sid, (-1, 1 << 62), 1 << 62, 10_000)]
    return out


async def fired(env: Env, workflow_id: str) -> list[str]:
    """The timer ids of the run's TimerFired events, in order."""
    return [e.attrs["timer_id"] for e in await env.history_of(workflow_id) if e.event_type == E.TimerFired]


async def timer_messages(cfg: QueuesConfig) -> list[tuple[int, bytes, bytes]]:
    """Every message of the timer topic so far: (partition, key, value)."""
    return await asyncio.to_thread(_timer_messages, cfg)


def _timer_messages(cfg: QueuesConfig) -> list[tuple[int, bytes, bytes]]:
    t = topics(cfg).timers
    consumer = Consumer({**base_config(cfg), "group.id": f"{cfg.topic_prefix}.test-reader",
                         "enable.auto.commit": False})
    try:
        out: list[tuple[int, bytes, bytes]] = []
        for p in range(cfg.timer_partitions):
            tp = TopicPartition(t, p)
            _, end = consumer.get_watermark_offsets(tp, WAIT_S)
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)])
            at = 0
            while at < end:
                for m in consumer.consume(end - at, WAIT_S):  # returns once it has that many
                    assert m.error() is None, m.error()
                    at = (m.offset() or 0) + 1
                    out.append((p, m.key() or b"", m.value() or b""))
        return out
    finally:
        consumer.close()


async def publish(cfg: QueuesConfig, messages: list[tuple[int, bytes, bytes]]) -> list[int]:
    """Publish to the timer topic (as another producer would); return the offsets."""
    producer = make_producer(cfg)
    await producer.start()
    try:
        return [await producer.send_and_wait(topics(cfg).timers, value, key=key, partition=partition)
                for partition, key, value in messages]
    finally:
        await producer.stop()


async def group_offset(cfg: QueuesConfig, q: KafkaTimerQueue) -> int | None:
    """The offset committed in Kafka for the queue's consumer group (None: nothing committed)."""

    def read() -> int | None:
        admin = open_admin(cfg)
        found = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(q.group, [q.tp])])
        [tp] = found[q.group].result(WAIT_S).topic_partitions
        return tp.offset if tp.offset >= 0 else None

    return await asyncio.to_thread(read)


# ====================================================================== firing

async def test_a_timer_fires_at_its_time_not_before_and_its_lag_is_recorded(queues: QueuesConfig,
                                                                            tmp_path: Path) -> None:
    env = await kafka_env(kafka_config(queues), tmp_path / "h.db")
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", timer("t", 1000))
        await env.fire(999)
        assert await fired(env, "wf-1") == []
        assert queue(env, "wf-1").pending >= 1
        await env.fire(251)  # 250 ms late
        assert await fired(env, "wf-1") == ["t"]
        assert 250 in queue(env, "wf-1").lags.samples() and 250 in env.history.timer_fire_lags()
        assert all(lag >= 0 for lag in env.history.timer_fire_lags())  # never early
    finally:
        await stop_env(env)


async def test_store_rows_are_deleted_only_after_the_broker_acknowledged_them(queues: QueuesConfig,
                                                                              tmp_path: Path) -> None:
    kafka = GatedKafka(queues)
    # No hold (see "held timers" below): each timer is sent as soon as it is committed.
    env = await kafka_env(kafka_config(queues, timer_publish_hold_ms=0), tmp_path / "h.db", kafka=kafka)
    try:
        await env.start("wf-1")
        wt = await env.poll_wft("wf-1")  # its workflow-task timeout timer is published ...
        await env.fire()
        await env.history.flush()  # ... and its row deleted
        assert await stored_timers(env, "wf-1") == []
        kafka.gate.clear()
        kafka.sent.clear()
        await env.complete(wt, timer("t", 1000))
        await asyncio.wait_for(kafka.sent.wait(), WAIT_S)  # the broker has it; the queue does not know yet
        rows = await stored_timers(env, "wf-1")
        assert len(rows) == 1
        await env.history.flush()
        assert await stored_timers(env, "wf-1") == rows  # not acknowledged: not deleted
        kafka.gate.set()
        await env.fire()  # acknowledged and read back
        await env.history.flush()
        assert await stored_timers(env, "wf-1") == []
        await env.fire(1000)
        assert await fired(env, "wf-1") == ["t"]
    finally:
        kafka.gate.set()
        await stop_env(env)


async def test_a_restarted_owner_fires_every_pending_timer_once_and_none_early(queues: QueuesConfig,
                                                                               tmp_path: Path) -> None:
    """Timers in every state at the crash: fired; published, deleted from the store and committed
    past; published but still in the store (no flush); fired but its offset not committed;
    committed to the store but not yet published."""
    cfg = kafka_config(queues, commit_interval_ms=3_600_000)  # commits only when the test says
    clock = FakeClock()
    due = {f"wf-{i}": 1000 * (i + 1) for i in range(10)}
    kafka = GatedKafka(cfg.queues)
    env = await kafka_env(cfg, tmp_path / "h.db", clock, kafka=kafka)
    try:
        for wf in list(due)[:5]:
            await env.start(wf)
            await env.run_wf(wf, timer("t", due[wf]))
        await env.fire(2500)  # wf-0 and wf-1 fire
        await env.history.flush()  # rows of wf-0..4 leave the store
        for sid in env.history.owned_shards():
            q = env.history.shard(sid).timers
            assert isinstance(q, KafkaTimerQueue)
            await q.commit()
        for wf in list(due)[5:8]:  # published, rows still in the store at the crash
            await env.start(wf)
            await env.run_wf(wf, timer("t", due[wf] - 2500))
        await env.fire(600)  # wf-2 fires; its offset is not committed
        assert await fired(env, "wf-2") == ["t"]
        kafka.sending.clear()  # from now on nothing reaches the broker
        for wf in list(due)[8:]:
            await env.start(wf)
            await env.run_wf(wf, timer("t", due[wf] - 3100))
        assert kafka.broker_has == len(await timer_messages(queues))
    finally:
        await crash_env(env)

    env = await kafka_env(cfg, tmp_path / "h.db", clock, identity="h2")
    try:
        expected = {wf: (["t"] if T0 + due[wf] <= clock.now else []) for wf in due}
        assert sum(map(len, expected.values())) == 3
        assert {wf: await fired(env, wf) for wf in due} == expected  # re-read duplicates changed nothing
        for wf in sorted(due, key=due.__getitem__):
            if expected[wf]:
                continue
            await env.fire(T0 + due[wf] - 1 - clock.now)
            assert await fired(env, wf) == []  # not early
            await env.fire(1)
            assert await fired(env, wf) == ["t"]
        await env.fire(10_000)
        assert {wf: await fired(env, wf) for wf in due} == {wf: ["t"] for wf in due}  # each exactly once
    finally:
        await stop_env(env)


# ====================================================================== held timers

def _held(env: Env) -> int:
    """Timers held back by the publishers of every shard."""
    return sum(queue_of_shard(env, sid).publisher.held for sid in env.history.owned_shards())


async def _outbox(env: Env, workflow_id: str) -> list[int]:
    return [r.task_id for r in await env.store.read_timer_outbox(env.history.shard_for("default", workflow_id), 0,
                                                                 10_000)]


async def test_timeouts_of_work_done_in_time_never_reach_the_log(queues: QueuesConfig, tmp_path: Path) -> None:
    """Held timers (docs/queues.md): each workflow task's timeout, the activity's start-to-close
    timeout and a cancelled user timer are held when committed; by the end of their hold the
    work they guard is done, so none is published, and their outbox rows go with the range
    delete."""
    env = await kafka_env(kafka_config(queues), tmp_path / "h.db")
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", activity("1", start_to_close_timeout_ms=30_000), timer("t", 20_000))
        at = await env.poll_act("wf-1", 5)
        await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, "ok"))
        await env.run_wf("wf-1", cmd(CommandType.CancelTimer, timer_id="t"), complete_wf())
        publisher = queue(env, "wf-1").publisher
        assert publisher.held == 4  # two workflow tasks' timeouts, the activity's, the user timer
        assert await _outbox(env, "wf-1")
        await env.fire(queues.timer_publish_hold_ms)  # every hold has ended
        assert publisher.held == 0 and publisher.unsent == 4
        assert await timer_messages(queues) == []
        await env.history.flush()
        assert await _outbox(env, "wf-1") == []
    finally:
        await stop_env(env)


async def test_a_held_timer_still_expected_is_published_in_time_and_fires(queues: QueuesConfig,
                                                                         tmp_path: Path) -> None:
    env = await kafka_env(kafka_config(queues), tmp_path / "h.db")
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", timer("t", 5000))  # its task's timeout is obsolete, the timer not
        await env.start("wf-2")
        await env.poll_next("wf-2")  # started and never completed: its timeout is expected
        assert _held(env) == 3
        await env.fire(4999)
        assert await fired(env, "wf-1") == []  # not early
        kinds = sorted(codec.loads(v)["data"]["k"] for _, _, v in await timer_messages(queues))
        assert kinds == ["user_timer"]  # sent at 4,000 ms (the margin before it is due), alone
        await env.fire(1)
        assert await fired(env, "wf-1") == ["t"]
        await env.fire(10_000 - 5000)
        assert E.WorkflowTaskTimedOut in await env.types("wf-2")
        kinds = sorted(codec.loads(v)["data"]["k"] for _, _, v in await timer_messages(queues))
        assert kinds == ["user_timer", "wft_backoff", "wft_timeout"]  # (the retry's backoff is due at once)
    finally:
        await stop_env(env)


async def test_far_timeouts_of_work_done_long_ago_never_reach_the_log(queues: QueuesConfig,
                                                                     tmp_path: Path) -> None:
    """Far timers (due past the lookahead when written) are judged like held ones when the scan
    reaches them: the activity's five-minute start-to-close timeout, of an activity completed at
    once, is not published and its row goes with the drop level's range delete; a five-minute
    user timer the run still waits for is published and fires at its time."""
    far_ms = 5 * 60_000
    assert far_ms > queues.timer_publish_lookahead_ms
    env = await kafka_env(kafka_config(queues), tmp_path / "h.db")
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", activity("1", start_to_close_timeout_ms=far_ms), timer("t", far_ms))
        at = await env.poll_act("wf-1", 5)
        await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, "ok"))
        await env.run_wf("wf-1")
        sid = env.history.shard_for("default", "wf-1")
        assert len(await env.store.read_timer_tasks(sid, (-1, 1 << 62), 1 << 62, 100)) == 2  # both far
        publisher = queue(env, "wf-1").publisher
        await env.fire(far_ms - 1)  # the scan has read both; the workflow tasks' timeouts ended their hold
        assert await fired(env, "wf-1") == []
        kinds = sorted(codec.loads(v)["data"]["k"] for _, _, v in await timer_messages(queues))
        assert kinds == ["user_timer"]
        assert publisher.unsent == 3  # the activity's timeout and two workflow tasks'
        await env.fire(1)
        assert await fired(env, "wf-1") == ["t"]
        await env.history.flush()
        assert await env.store.read_timer_tasks(sid, (-1, 1 << 62), 1 << 62, 100) == []
    finally:
        await stop_env(env)


async def test_without_a_hold_far_timers_are_published_unjudged(queues: QueuesConfig, tmp_path: Path) -> None:
    """`queues.timer_publish_hold_ms: 0` turns the judgement off for far timers too: the
    completed activity's five-minute timeout reaches the log when the scan reaches it."""
    far_ms = 5 * 60_000
    env = await kafka_env(kafka_config(queues, timer_publish_hold_ms=0), tmp_path / "h.db")
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", activity("1", start_to_close_timeout_ms=far_ms))
        at = await env.poll_act("wf-1", 5)
        await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, "ok"))
        await env.run_wf("wf-1", complete_wf())
        await env.fire(far_ms - 1)
        kinds = [codec.loads(v)["data"]["k"] for _, _, v in await timer_messages(queues)]
        assert "activity_timeout" in kinds and queue(env, "wf-1").publisher.unsent == 0
    finally:
        await stop_env(env)


async def test_timers_held_when_the_owner_dies_fire_on_the_next_owner(queues: QueuesConfig, tmp_path: Path) -> None:
    cfg = kafka_config(queues)
    clock = FakeClock()
    env = await kafka_env(cfg, tmp_path / "h.db", clock)
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", timer("t", 5000))
        assert queue(env, "wf-1").publisher.held == 2  # the timer and its task's timeout
        await env.history.flush()
        assert len(await _outbox(env, "wf-1")) == 2  # the ack level did not pass them
    finally:
        await crash_env(env)
    assert await timer_messages(queues) == []
    env = await kafka_env(cfg, tmp_path / "h.db", clock, identity="h2")
    try:
        await env.fire(4999)
        assert await fired(env, "wf-1") == []
        await env.fire(1)
        assert await fired(env, "wf-1") == ["t"]
    finally:
        await stop_env(env)


# ====================================================================== duplicates

async def _run_a_mix(env: Env) -> None:
    """Workflows that used user timers, activity retry backoff and timeouts, workflow-task
    timeouts and a start delay; one of them still waits for a long timer."""
    await env.start("wf-timers")
    await env.run_wf("wf-timers", timer("a", 1000), timer("b", 2000))
    await env.start("wf-act", run_timeout_ms=600_000)
    await env.run_wf("wf-act", activity("1", schedule_to_close_timeout_ms=60_000, start_to_close_timeout_ms=30_000,
                                        retry_policy={"initial_interval_ms": 500}))
    at = await env.poll_act("wf-act", 5)
    await env.history.respond_activity_task_failed(RespondActivityTaskFailedRequest(
        at.task_token, Failure("flaky", kind="Unavailable")))
    await env.start("wf-delayed", start_delay_ms=1500)
    await env.fire(2000)  # a, b, the retry backoff and the start delay fire
    at = await env.poll_act("wf-act", 5, attempt=2)
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, "ok"))
    await env.run_wf("wf-act", complete_wf())
    await env.run_wf("wf-delayed", timer("long", 3_600_000))
    await env.run_wf("wf-timers", complete_wf())
    await env.fire(60_000)  # the timeouts come due: every one is stale by now


async def test_every_timer_message_delivered_twice_changes_no_history(queues: QueuesConfig, tmp_path: Path) -> None:
    # A lookahead past the run timeout (600 s): every kind of timer is in the log at once (the long
    # timer, further ahead, is published from the store's rows when it comes that close).
    # No hold: timers whose work ended in time are in the log too, to be delivered twice.
    env = await kafka_env(kafka_config(queues, timer_publish_lookahead_ms=700_000, timer_publish_hold_ms=0),
                          tmp_path / "h.db")
    wfs = ["wf-timers", "wf-act", "wf-delayed"]
    try:
        await _run_a_mix(env)
        assert await fired(env, "wf-timers") == ["a", "b"] and await fired(env, "wf-delayed") == []
        before = {wf: await env.history_of(wf) for wf in wfs}
        messages = await timer_messages(queues)
        kinds = {codec.loads(v)["data"]["k"] for _, _, v in messages}
        assert kinds >= {"user_timer", "activity_retry", "activity_timeout", "wft_timeout", "wft_backoff",
                         "workflow_timeout"}
        offsets = await publish(queues, messages)  # each one a second time
        for sid in env.history.owned_shards():
            q = env.history.shard(sid).timers
            assert isinstance(q, KafkaTimerQueue)
            await q.read_past(max(o for (p, _, _), o in zip(messages, offsets, strict=True) if p == q.tp.partition))
        await env.fire()
        assert {wf: await env.history_of(wf) for wf in wfs} == before
        await env.fire(3_600_000)  # the long timer (and its duplicate) comes due: it fires once
        assert await fired(env, "wf-delayed") == ["long"]
        assert {wf: await env.history_of(wf) for wf in wfs[:2]} == {wf: before[wf] for wf in wfs[:2]}
    finally:
        await stop_env(env)


# ====================================================================== offsets and partitions

async def test_far_timers_are_republished_so_the_committed_offset_moves(queues: QueuesConfig,
                                                                        tmp_path: Path) -> None:
    env = await kafka_env(kafka_config(queues, timer_republish_horizon_ms=1000, timer_publish_hold_ms=0),
                          tmp_path / "h.db")
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", timer("t", 10_500))
        await env.fire()
        q = queue(env, "wf-1")
        assert q.pending == 2  # the user timer, and the (stale) timeout of the completed workflow task
        first = await q.commit()
        assert first is not None and await group_offset(queues, q) == first
        offsets = [first]
        for _ in range(9):  # held a horizon each time: published again, the old message is done
            await env.fire(1000)
            offsets.append(await q.commit() or 0)
            assert q.pending == 2 and await fired(env, "wf-1") == []
        assert offsets == sorted(set(offsets))  # strictly increasing
        assert await group_offset(queues, q) == offsets[-1]
        await env.fire(1500)
        assert await fired(env, "wf-1") == ["t"]
        assert q.pending == 0 and q.open_offsets == 0
    finally:
        await stop_env(env)


async def test_a_timer_being_republished_keeps_its_offset_until_the_copy_is_acknowledged(
        queues: QueuesConfig, tmp_path: Path) -> None:
    cfg = kafka_config(queues, timer_republish_horizon_ms=1000, commit_interval_ms=3_600_000, timer_publish_hold_ms=0)
    clock = FakeClock()
    kafka = GatedKafka(cfg.queues)
    env = await kafka_env(cfg, tmp_path / "h.db", clock, kafka=kafka)
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", timer("t", 5000))
        await env.fire()
        await env.history.flush()
        assert await stored_timers(env, "wf-1") == []  # the log alone has the timer now
        q = queue(env, "wf-1")
        before = await q.commit()
        kafka.sending.clear()
        clock.advance(1000)
        env.history.poke_timers()  # held a horizon: the queue publishes a copy, which cannot get out
        await asyncio.wait_for(kafka.held_back.wait(), WAIT_S)
        assert await q.commit() == before
    finally:
        await crash_env(env)
    env = await kafka_env(cfg, tmp_path / "h.db", clock, identity="h2")
    try:
        await env.fire(3999)
        assert await fired(env, "wf-1") == []
        await env.fire(1)
        assert await fired(env, "wf-1") == ["t"]
    finally:
        await stop_env(env)


async def test_a_shard_ignores_the_timers_of_another_shard_on_its_partition(queues: QueuesConfig,
                                                                            tmp_path: Path) -> None:
    env = await kafka_env(kafka_config(queues, timer_partitions=1, timer_publish_hold_ms=0), tmp_path / "h.db")
    try:
        ids = [f"wf-{i}" for i in range(12)]
        by_shard = {sid: [wf for wf in ids if env.history.shard_for("default", wf) == sid] for sid in (0, 1)}
        assert by_shard[0] and by_shard[1]
        for wf in ids:
            await env.start(wf)
            await env.run_wf(wf, timer("t", 5000))
        await env.fire()
        q0, q1 = queue(env, by_shard[0][0]), queue(env, by_shard[1][0])
        assert q0.tp == q1.tp
        # each workflow: its timer, and the (stale) timeout of its completed workflow task
        assert (q0.pending, q1.pending) == (2 * len(by_shard[0]), 2 * len(by_shard[1]))
        stranger = TimerMessage(7, env.clock.now, 1, {"k": "user_timer", "ns": "default", "wf": "nobody",
                                                      "run": "r", "timer_id": "t", "started": 5})
        [offset] = await publish(queues, [(0, b"7", encode_timer(stranger))])
        await q0.read_past(offset)
        await q1.read_past(offset)
        await env.fire(5000)
        assert [await fired(env, wf) for wf in ids] == [["t"]] * len(ids)
        assert (q0.lags.count, q1.lags.count) == (len(by_shard[0]), len(by_shard[1]))
        await env.fire(5000)  # the workflow-task timeouts
        assert (q0.lags.count, q1.lags.count) == (2 * len(by_shard[0]), 2 * len(by_shard[1]))
        assert q0.open_offsets == q1.open_offsets == 0
        assert await q0.commit() == await q1.commit()  # both past every message, the stranger's too
    finally:
        await stop_env(env)


async def test_timers_published_out_of_due_order_fire_in_due_order(queues: QueuesConfig, tmp_path: Path) -> None:
    env = await kafka_env(kafka_config(queues), tmp_path / "h.db")
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", timer("late", 3000))
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go", []))
        await env.run_wf("wf-1", timer("early", 1000))
        await env.fire(1000)
        assert await fired(env, "wf-1") == ["early"]
        await env.fire(1999)
        assert await fired(env, "wf-1") == ["early"]
        await env.fire(1)
        assert await fired(env, "wf-1") == ["early", "late"]
    finally:
        await stop_env(env)


async def test_a_new_store_on_old_topics_is_not_confused_by_their_task_ids(queues: QueuesConfig,
                                                                           tmp_path: Path) -> None:
    """Task ids restart with a new store; an earlier store's timer left in the topic with the same
    task id (and another due time) must not pass for the new timer."""
    clock = FakeClock()
    old = await kafka_env(kafka_config(queues), tmp_path / "old.db", clock)
    try:
        await old.start("wf-1")
        await old.run_wf("wf-1", timer("t", 60_000))
        old_ids = await stored_timers(old, "wf-1")
        await old.fire()  # published, and read back by the shard's queue
        assert queue(old, "wf-1").pending >= 1
    finally:
        await crash_env(old)
    new = await kafka_env(kafka_config(queues), tmp_path / "new.db", clock, identity="h2")
    try:
        await new.start("wf-1")
        await new.run_wf("wf-1", timer("t", 1_000))
        assert set(await stored_timers(new, "wf-1")) & set(old_ids)  # the same task ids again
        await new.fire(1_000)
        assert await fired(new, "wf-1") == ["t"]
    finally:
        await stop_env(new)


async def test_a_restarted_owner_fires_a_backlog_a_few_at_a_time(queues: QueuesConfig, tmp_path: Path) -> None:
    """A new owner re-reads the timers of the log past the committed offset; when they come due
    together (a backlog, as after downtime), they fire at most history.timer_fires_in_flight at
    once, and all of them fire."""
    limit, n = 3, 12
    cfg = kafka_config(queues)
    cfg.history.timer_fires_in_flight = limit
    clock = FakeClock()
    env = await kafka_env(cfg, tmp_path / "h.db", clock)
    sid = env.history.shard_for("default", "wf-0")
    ids = [w for w in (f"wf-{i}" for i in range(1000)) if env.history.shard_for("default", w) == sid][:n]
    try:
        for wf in ids:
            await env.start(wf)
            await env.run_wf(wf, timer("t", 5_000))
    finally:
        await crash_env(env)
    env = await kafka_env(cfg, tmp_path / "h.db", clock, identity="h2")
    try:
        seen = count_in_flight(queue(env, ids[0]))
        assert {wf: await fired(env, wf) for wf in ids} == {wf: [] for wf in ids}
        assert await env.fire(5_000) == n
        assert {wf: await fired(env, wf) for wf in ids} == {wf: ["t"] for wf in ids}
        assert seen[1] == limit, seen  # never more at once (and reached: a backlog)
    finally:
        await stop_env(env)
