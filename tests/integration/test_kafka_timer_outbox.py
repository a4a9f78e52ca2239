"""The Kafka mode's timer outbox (docs/queues.md, "History publishes"), against the real broker and
on each store (SQLite, and the real Cassandra node): timers are written to the outbox in the
shard's atomic write, published in task-id order, and range-deleted at or below the persisted
outbox ack level, so a new owner's start-up scan never crosses the rows that were published.

On Cassandra the tombstones a read crosses come from the query trace (the read stage's "Read N
live rows and M tombstone cells" event). A fake clock makes timers due; `fire_due` returns once
the shard's queue has read everything it published and the effects are done, so every check after
it is deterministic. The fire callback here records every call: history's own check (dropping a
timer its run no longer expects) is not in the way, so duplicates show.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from history.kafka_resources import KafkaResources
from history.kafka_timers import KafkaTimerQueue, kafka_timer_queues
from history.queues import TimerTask, TransferTask
from history.service import HistoryServiceImpl
from history.shard import ShardContext, Update
from history.state import MutableState, Mutation
from history.store.base import (
    TIMER_QUEUE_KAFKA,
    TIMER_QUEUE_STORE,
    CurrentRunRow,
    CurrentRunWrite,
    ExecutionStore,
)
from history.store.cassandra import CassandraStore
from history.store.factory import open_stores
from legato.config import Config, QueuesConfig
from legato.errors import FailedPrecondition, ShardOwnershipLost
from tests.integration.test_kafka_timers import WAIT_S, GatedKafka, kafka_config, kafka_env, stop_env
from tests.unit.history.conftest import FakeClock, make_config

pytestmark = pytest.mark.timeout(300)

NS = "ns"
SHARD = 0
T0 = 1_700_000_000_000
STEP_MS = 1000  # the fake clock's step between fire-and-flush rounds
TIMERS_PER_RUN = 100  # timers written by one run's commit
TIMERS = 3000  # per round of the main test: thousands, past Cassandra's tombstone warning (1,000)
MAX_TOMBSTONES = 10  # what a scan may cross: range-tombstone markers, never one per published timer
FIRES_IN_FLIGHT = Config().history.timer_fires_in_flight  # the default, as a node has it
_TOMBSTONES = re.compile(r"Read (\d+) live rows and (\d+) tombstone cells")

Fired = tuple[int, int]  # (fire_time_ms, task_id)


@dataclass
class Owner:
    """One owner of shard 0 with Kafka timers: its ShardContext, a fake clock, and every call of
    the fire callback in order, with the clock at the call."""

    shard: ShardContext
    clock: list[int]
    kafka: KafkaResources
    fired: list[Fired] = field(default_factory=list)
    fired_at: list[int] = field(default_factory=list)

    @property
    def queue(self) -> KafkaTimerQueue:
        assert isinstance(self.shard.timers, KafkaTimerQueue)
        return self.shard.timers

    async def advance(self, to_ms: int) -> None:
        """Move the clock to `to_ms` a step at a time, firing what is due and flushing each step."""
        while self.clock[0] < to_ms:
            self.clock[0] = min(to_ms, self.clock[0] + STEP_MS)
            await self.shard.timers.fire_due()
            await self.shard.flush()

    async def stop(self) -> None:
        await self.shard.stop()
        await self.kafka.close()

    async def crash(self) -> None:
        """Stop like a killed node: no last flush, no last offset commit."""
        self.shard.lose(ShardOwnershipLost("test: the node died"))
        await self.stop()


def _config() -> Config:
    return Config.model_validate({"history": {"num_shards": 1, "ack_flush_interval_ms": 3_600_000}})


def _shard(info: Any, store: ExecutionStore, clock: list[int], record: Callable[[TimerTask], Any],
           timer_queues: Any = None) -> ShardContext:
    async def dispatch(_: TransferTask) -> None:
        return None

    return ShardContext(info, store, _config(), lambda: clock[0], dispatch, record, lambda _: None,
                        timer_queues=timer_queues)


async def _owner(store: ExecutionStore, queues: QueuesConfig, name: str, now: int,
                 kafka: KafkaResources | None = None) -> Owner:
    info = await store.acquire_shard(SHARD, name, TIMER_QUEUE_KAFKA)
    kafka = kafka or KafkaResources(queues)
    clock = [now]
    fired: list[Fired] = []
    fired_at: list[int] = []

    async def record(t: TimerTask) -> None:
        fired.append((t.fire_time_ms, t.task_id))
        fired_at.append(clock[0])

    owner = Owner(_shard(info, store, clock, record, kafka_timer_queues(queues, kafka, FIRES_IN_FLIGHT)),
                  clock, kafka, fired, fired_at)
    await owner.shard.start()
    await owner.shard.timers.fire_due()  # reading, and every row the store held published
    return owner


async def _commit_timers(shard: ShardContext, first_run: int, runs: int, due: Callable[[int], int]) -> list[int]:
    """`runs` new runs, each writing TIMERS_PER_RUN timers (timer i due at due(i)) in its commit;
    returns the due times written."""
    updates = []
    written: list[int] = []
    for r in range(first_run, first_run + runs):
        st = MutableState(NS, f"wf{r}", "r1", "t", "q", 0)
        st.next_event_id = 2
        timers = [(due(i), {"k": "test", "i": i}) for i in range(r * TIMERS_PER_RUN, (r + 1) * TIMERS_PER_RUN)]
        written += [d for d, _ in timers]
        updates.append(Update([Mutation(st, 0, None, encoded=[(1, "e1")], timers=timers)],
                              CurrentRunWrite(CurrentRunRow(NS, f"wf{r}", "r1", "running"), None)))
    await asyncio.gather(*(shard.commit(u) for u in updates))
    return written


def _scrambled(base: int, n: int) -> Callable[[int], int]:
    """Due times 10 ms apart in an order unlike the task ids' (i -> i * 7919 mod n is a permutation:
    7919 is a prime that does not divide n)."""
    assert n % 7919
    return lambda i: base + 10 * ((i * 7919) % n)


async def _outbox(store: ExecutionStore) -> list[int]:
    return [r.task_id for r in await store.read_timer_outbox(SHARD, 0, 100_000)]


async def _timer_rows(store: ExecutionStore) -> list[Fired]:
    return [(r.fire_time_ms, r.task_id) for r in await store.read_timer_tasks(SHARD, (-1, 0), 1 << 62, 100_000)]


async def _traced_tombstones(store: ExecutionStore, statement: str, params: tuple[Any, ...]) -> int | None:
    """The tombstone cells Cassandra's read with the store's prepared `statement` crossed (from the
    query trace); None on SQLite, which has no tombstones."""
    if not isinstance(store, CassandraStore):
        return None
    bound = getattr(store._ps, statement).bind(params)
    session = store.cql.session

    def traced() -> int:
        result = session.execute(bound, trace=True)
        events = result.get_query_trace(max_wait_sec=WAIT_S).events
        return sum(int(m.group(2)) for e in events if (m := _TOMBSTONES.search(e.description)))

    return await asyncio.to_thread(traced)


async def _scans_crossed(store: ExecutionStore, outbox_level: int) -> list[int | None]:
    """What a new owner's start-up scans cross: the outbox above its level, and (as a check that
    nothing hides below) the outbox from 0 and the due-time timer rows from the start."""
    return [await _traced_tombstones(store, "outbox_read", (SHARD, outbox_level, 100_000)),
            await _traced_tombstones(store, "outbox_read", (SHARD, 0, 100_000)),
            await _traced_tombstones(store, "timer_read", (SHARD, -1, 0, 1 << 62, 100_000))]


def _in_due_order_never_early(owner: Owner, started_ms: int) -> None:
    """Timers that came due while the owner held them fired in due order (ties: task id); those
    already overdue when it started fire as the consumer reads them. None fired early, none twice."""
    on_time = [f for f in owner.fired if f[0] > started_ms]
    assert on_time == sorted(on_time)
    assert all(at >= due for (due, _), at in zip(owner.fired, owner.fired_at, strict=True))  # never early
    assert len(set(owner.fired)) == len(owner.fired)  # one owner fires a timer once


@pytest.fixture
def store(shard_store: ExecutionStore) -> ExecutionStore:
    return shard_store


# ---------------------------------------------------------------------- the scans

async def test_thousands_of_timers_through_the_outbox_leave_nothing_for_the_next_scan_to_cross(
        store: ExecutionStore, kafka_queues: QueuesConfig) -> None:
    """Two owners each publish 3,000 timers (due in an order unlike their task ids) through the
    outbox; after each, the next owner's scans cross a bounded number of tombstones (with rows
    deleted one by one, as before: 3,000, then 6,000). Every timer fires, never early, in due order
    at each owner; a timer fires twice only when the new owner re-reads one the previous owner
    fired (at or above the consumer group's committed offset: history drops such a duplicate)."""
    crossed: list[int | None] = []
    owners: list[Owner] = []
    due_times: list[int] = []
    now = T0
    for round_ in range(2):
        owner = await _owner(store, kafka_queues, f"owner{round_}", now)
        owners.append(owner)
        assert owner.queue.publisher.outbox_ack_level() == owner.shard.persisted_outbox_ack_level
        due = _scrambled(now + STEP_MS, TIMERS)
        runs = TIMERS // TIMERS_PER_RUN
        due_times += await _commit_timers(owner.shard, round_ * runs, runs, due)
        assert len(await _outbox(store)) == TIMERS
        await owner.shard.timers.fire_due()  # every row published and acknowledged; none due yet
        await owner.shard.flush()
        assert await _outbox(store) == []  # one range delete took them all
        level = owner.shard.persisted_outbox_ack_level
        assert level >= max(t for _, t in owner.queue._held)  # every task id written is at or below it
        # The first owner hands the shard over halfway through its timers; the second fires the
        # rest (from the consumer group's committed offset) and all of its own.
        await owner.advance(now + STEP_MS + 10 * TIMERS // (2 if round_ == 0 else 1))
        _in_due_order_never_early(owner, now)
        await owner.stop()
        now = owner.clock[0]
        info = await store.acquire_shard(SHARD, "probe", TIMER_QUEUE_KAFKA)
        assert info.timer_outbox_ack_level == level
        crossed += await _scans_crossed(store, level)
    first, second = owners
    assert TIMERS // 3 < len(first.fired) < TIMERS
    everything = set(first.fired) | set(second.fired)
    assert sorted(f for f, _ in everything) == sorted(due_times)  # every timer fired
    twice = set(first.fired) & set(second.fired)
    handover = second.fired_at[0] if second.fired_at else 0
    assert all(due <= handover for due, _ in twice)  # only overdue re-reads of the log at the handover
    if isinstance(store, CassandraStore):
        assert all(c is not None and c <= MAX_TOMBSTONES for c in crossed), crossed


async def test_the_level_never_passes_a_timer_the_broker_did_not_acknowledge(
        store: ExecutionStore, kafka_queues: QueuesConfig) -> None:
    """Acknowledgements held back: the flush keeps the level below those rows, they stay in the
    store, and after a crash the next owner publishes them and fires each timer once."""
    kafka = GatedKafka(kafka_queues)
    a = await _owner(store, kafka_queues, "a", T0, kafka)
    due = _scrambled(T0 + STEP_MS, 500)
    due_times = await _commit_timers(a.shard, 0, 5, due)
    await a.shard.timers.fire_due()
    await a.shard.flush()
    level = a.shard.persisted_outbox_ack_level
    assert level > 0 and await _outbox(store) == []
    kafka.gate.clear()  # the broker takes the next ones; the publisher is not told
    due_times += await _commit_timers(a.shard, 5, 3, lambda i: T0 + STEP_MS + 10 * (i - 500))
    held = await _outbox(store)
    assert len(held) == 300 and min(held) > level
    while kafka.broker_has < 800:
        kafka.sent.clear()
        await asyncio.wait_for(kafka.sent.wait(), WAIT_S)
    await a.shard.flush()
    assert level <= a.shard.persisted_outbox_ack_level < min(held)  # not passed (it may pass a txn id)
    assert await _outbox(store) == held
    await a.crash()
    kafka.gate.set()

    b = await _owner(store, kafka_queues, "b", T0)
    await b.shard.flush()
    assert await _outbox(store) == [] and b.shard.persisted_outbox_ack_level >= max(held)
    await b.advance(T0 + 2 * STEP_MS + 10 * 500)
    _in_due_order_never_early(b, T0)
    assert sorted(f for f, _ in b.fired) == sorted(due_times)  # each once: duplicates in the log held once
    await b.stop()


# ---------------------------------------------------------------------- switching queue modes

async def test_a_shard_moves_from_the_store_backed_timer_queue_to_kafka_but_not_back(
        store: ExecutionStore, kafka_queues: QueuesConfig) -> None:
    """The store-backed queue fires some timers and leaves the rest as due-time rows; the Kafka
    owner publishes those, range-deletes them without moving the timer ack level, and fires each
    once. A store-backed owner is then refused the shard."""
    info = await store.acquire_shard(SHARD, "s", TIMER_QUEUE_STORE)
    clock = [T0]
    store_fired: list[Fired] = []

    async def record(t: TimerTask) -> None:
        store_fired.append((t.fire_time_ms, t.task_id))

    s = _shard(info, store, clock, record)
    await s.start()
    due = _scrambled(T0 + STEP_MS, 1000)
    due_times = await _commit_timers(s, 0, 10, due)
    while clock[0] < T0 + STEP_MS + 10 * 500:
        clock[0] += STEP_MS
        await s.timers.fire_due()
        await s.flush()
    await s.stop()
    level = s.persisted_timer_ack_level
    left = await _timer_rows(store)
    assert level > T0 and left and len(left) + len(store_fired) == 1000

    k = await _owner(store, kafka_queues, "k", clock[0])
    await k.shard.flush()
    assert await _timer_rows(store) == []  # published, then dropped with one range delete
    assert k.shard.persisted_timer_ack_level == level  # the level did not move
    started = clock[0]
    await k.advance(T0 + 2 * STEP_MS + 10 * 1000)
    _in_due_order_never_early(k, started)
    assert sorted(k.fired) == sorted(left)  # each left row fired once
    assert sorted(f for f, _ in [*store_fired, *k.fired]) == sorted(due_times)
    boundary = k.queue.outbox_until()
    await k.stop()
    crossed = await _traced_tombstones(store, "timer_read", (SHARD, level - 1, 1 << 62, 1 << 62, 100_000))
    assert crossed is None or crossed <= MAX_TOMBSTONES
    with pytest.raises(FailedPrecondition, match=r"queues\.kind: kafka"):
        await store.acquire_shard(SHARD, "s again", TIMER_QUEUE_STORE)
    # The next Kafka owner does not scan those rows again: every row up to the last boundary was
    # published and dropped, so its scans start just past it.
    assert (await store.acquire_shard(SHARD, "k again", TIMER_QUEUE_KAFKA)).timer_rows_dropped_before == boundary + 1


async def test_a_history_node_without_kafka_refuses_a_store_whose_timers_went_to_kafka(
        kafka_queues: QueuesConfig, tmp_path: Path) -> None:
    """The one-process server on a database a Kafka-mode history used: it refuses to start, naming
    the setting, and takes no shard."""
    env = await kafka_env(kafka_config(kafka_queues), tmp_path / "h.db")
    await env.start("wf-1")
    await env.run_wf("wf-1")
    await stop_env(env)
    cfg = make_config()
    stores = await open_stores(cfg, str(tmp_path / "h.db"))
    try:
        h = HistoryServiceImpl(stores.execution, stores.visibility, cfg, clock=FakeClock())
        with pytest.raises(FailedPrecondition, match=r"keeps its timers on Kafka.*queues\.kind: kafka"):
            await h.start()
        assert h.owned_shards() == []
    finally:
        await stores.execution.close()
