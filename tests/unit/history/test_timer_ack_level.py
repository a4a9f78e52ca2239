"""The timer ack level: a shard's timers are read from its persisted timer_ack_level and what
fired below it goes with one range delete, so no timer scan crosses what was deleted.

On SQLite and on the real Cassandra node (`history_store`); on Cassandra the number of tombstones
a read crosses is taken from the query trace (the read stage's "Read N live rows and M tombstone
cells" event). A fake clock makes timers due; `fire_due` waits for their effects, so every check
after it is deterministic.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from history import shard as shard_module
from history.queues import TimerQueueProcessor, TimerTask, TransferTask
from history.shard import ShardContext, Update
from history.state import MutableState, Mutation
from history.store.base import (
    CurrentRunRow,
    CurrentRunWrite,
    ExecutionStore,
    RunWrite,
    ShardWrite,
    TimerTaskRow,
)
from history.store.cassandra import CassandraStore
from history.store.sqlite import SqliteStore
from legato.api import StartWorkflowRequest
from legato.config import Config
from legato.errors import ShardOwnershipLost, Unavailable
from tests.unit.history.conftest import (
    T0,
    Env,
    close_env,
    complete_wf,
    make_config,
    make_env,
    timer,
)

NS = "ns"
SHARD = 0
STEP_MS = 1000  # the fake clock's step between fire-and-flush rounds
TIMERS_PER_RUN = 100  # timers written by one run's commit
MAX_TOMBSTONES = 10  # what a timer scan may cross: range-tombstone markers, never one per fired timer
_TOMBSTONES = re.compile(r"Read (\d+) live rows and (\d+) tombstone cells")


# ---------------------------------------------------------------------- a shard driven by hand

@dataclass
class Owner:
    """One owner of shard 0: its ShardContext, a fake clock, and the timers it fired in order."""

    shard: ShardContext
    clock: list[int]
    fired: list[tuple[int, int]] = field(default_factory=list)  # (fire_time_ms, task_id), in firing order

    async def advance(self, to_ms: int) -> None:
        """Move the clock to `to_ms` a step at a time: each step fires what is due, waits for
        the effects, and flushes the ack levels."""
        while self.clock[0] < to_ms:
            self.clock[0] = min(to_ms, self.clock[0] + STEP_MS)
            await self.shard.timers.fire_due()
            await self.shard.flush()


def _config() -> Config:
    return make_config(num_shards=1)


async def _owner(store: ExecutionStore, name: str, now: int,
                 fire: Callable[[TimerTask], Awaitable[None]] | None = None) -> Owner:
    info = await store.acquire_shard(SHARD, name)
    clock = [now]
    owner: Owner | None = None

    async def record(t: TimerTask) -> None:
        assert owner is not None
        owner.fired.append((t.fire_time_ms, t.task_id))
        if fire is not None:
            await fire(t)

    async def dispatch(_: TransferTask) -> None:
        return None

    shard = ShardContext(info, store, _config(), lambda: clock[0], dispatch, record, lambda _: None)
    owner = Owner(shard, clock)
    await shard.start()
    return owner


async def _commit_timers(owner: Owner, first_run: int, runs: int, due: Callable[[int], int]) -> None:
    """`runs` new runs, each writing TIMERS_PER_RUN timers (timer i due at due(i)) in its commit."""
    updates = []
    for r in range(first_run, first_run + runs):
        st = MutableState(NS, f"wf{r}", "r1", "t", "q", 0)
        st.next_event_id = 2
        timers = [(due(i), {"k": "test", "i": i}) for i in range(r * TIMERS_PER_RUN, (r + 1) * TIMERS_PER_RUN)]
        updates.append(Update([Mutation(st, 0, None, encoded=[(1, "e1")], timers=timers)],
                              CurrentRunWrite(CurrentRunRow(NS, f"wf{r}", "r1", "running"), None)))
    await asyncio.gather(*(owner.shard.commit(u) for u in updates))


async def _stored(store: ExecutionStore) -> list[tuple[int, int]]:
    return [(t.fire_time_ms, t.task_id) for t in await store.read_timer_tasks(SHARD, (-1, 0), 1 << 62, 100_000)]


async def _tombstones_crossed(store: ExecutionStore, after: tuple[int, int], until: int) -> int | None:
    """The tombstone cells Cassandra's read of the timer slice (after, until] crossed; None on
    SQLite (no tombstones)."""
    if not isinstance(store, CassandraStore):
        return None
    return await _traced_tombstones(store, store._ps.timer_read.bind((SHARD, after[0], after[1], until, 100_000)))


async def _traced_tombstones(store: CassandraStore, bound: Any) -> int:
    """Run `bound` with tracing on; the tombstone cells its reads crossed, from the trace."""
    session = store.cql.session

    def traced() -> int:
        result = session.execute(bound, trace=True)
        events = result.get_query_trace(max_wait_sec=10.0).events
        return sum(int(m.group(2)) for e in events if (m := _TOMBSTONES.search(e.description)))

    return await asyncio.to_thread(traced)


@pytest.fixture
def store(shard_store: ExecutionStore) -> ExecutionStore:
    return shard_store


# ---------------------------------------------------------------------- the scans

async def test_thousands_of_fired_timers_leave_nothing_for_the_next_scan_to_cross(store: ExecutionStore) -> None:
    """3,000 timers fire in two rounds of 1,500; after each, a new owner's first read (from the
    persisted level) and even a read from the very start cross a bounded number of tombstones
    (without the level: 1,500, then 3,000, growing with every timer ever fired)."""
    crossed: list[int | None] = []
    now = T0
    for round_ in range(2):
        base = now + STEP_MS
        due = lambda i, base=base: base + 10 * (i % 1500)  # noqa: E731 - 1,500 timers span 15 s
        owner = await _owner(store, f"owner{round_}", now)
        runs = 1500 // TIMERS_PER_RUN
        await _commit_timers(owner, round_ * runs, runs, due)
        await owner.advance(due(1499) + STEP_MS)
        fired = owner.fired
        assert [f for f, _ in fired] == [due(i) for i in range(1500)]  # each once, in due order
        assert fired == sorted(fired)
        level = owner.shard.persisted_timer_ack_level
        assert level > fired[-1][0]  # every fired timer lies below the persisted level
        await owner.shard.stop()
        now = owner.clock[0]
        assert await _stored(store) == []
        assert (await store.acquire_shard(SHARD, "probe")).timer_ack_level == level
        crossed.append(await _tombstones_crossed(store, (level - 1, 1 << 62), level + 60_000))
        crossed.append(await _tombstones_crossed(store, (-1, 0), level + 60_000))  # from the start
    if isinstance(store, CassandraStore):
        assert all(c is not None and c <= MAX_TOMBSTONES for c in crossed), crossed


async def test_acknowledged_transfer_tasks_leave_nothing_for_the_next_scan_to_cross(store: ExecutionStore) -> None:
    """The transfer outbox the same way: 1,500 tasks dispatched and acknowledged over three flushes;
    the next owner's read above the ack level, and a read from 0, cross a bounded number."""
    a = await _owner(store, "a", T0)
    for r in range(3):
        updates = []
        for w in range(5):
            st = MutableState(NS, f"wf{r}-{w}", "r1", "t", "q", 0)
            st.next_event_id = 2
            updates.append(Update([Mutation(st, 0, None, encoded=[(1, "e1")], transfer=[{"k": "test"}] * 100)],
                                  CurrentRunWrite(CurrentRunRow(NS, f"wf{r}-{w}", "r1", "running"), None)))
        await asyncio.gather(*(a.shard.commit(u) for u in updates))
        await a.shard.transfer.wait_idle()
        await a.shard.flush()
    await a.shard.stop()
    ack = (await store.acquire_shard(SHARD, "b")).transfer_ack_level
    assert ack == a.shard.persisted_ack_level > 0 and await store.read_transfer_tasks(SHARD, 0, 10) == []
    if isinstance(store, CassandraStore):
        crossed = [await _traced_tombstones(store, store._ps.transfer_read.bind((SHARD, after, 1000)))
                   for after in (ack, 0)]
        assert all(c <= MAX_TOMBSTONES for c in crossed), crossed


async def test_a_new_owner_fires_what_was_pending_and_nothing_already_acked(store: ExecutionStore) -> None:
    due = lambda i: T0 + 10 * i  # noqa: E731
    a = await _owner(store, "a", T0)
    await _commit_timers(a, 0, 10, due)  # 1,000 timers, due over 10 s
    await a.advance(due(400))
    acked = list(a.fired)  # fired, and their effect made durable by the flush: below the level or deleted
    assert [f for f, _ in acked] == [due(i) for i in range(401)]
    assert due(399) < a.shard.persisted_timer_ack_level <= due(400) + 1
    # More fire, but the owner is dropped before it flushes again (a crash): their effects are
    # durable, the store does not know it yet, so the next owner fires them again.
    a.clock[0] = due(600)
    await a.shard.timers.fire_due()
    a.shard.lose(ShardOwnershipLost("test: the node died"))
    assert [f for f, _ in a.fired] == [due(i) for i in range(601)]

    b = await _owner(store, "b", due(600))
    await b.advance(due(999) + STEP_MS)
    assert [f for f, _ in b.fired] == [due(i) for i in range(401, 1000)]  # pending ones, in order, once
    assert set(b.fired) & set(acked) == set()
    await b.shard.stop()
    assert await _stored(store) == []


async def test_a_timer_that_fired_out_of_order_is_deleted_alone_and_the_level_waits(store: ExecutionStore) -> None:
    """A timer whose effect takes long holds the level at its due time; the ones after it that
    fired meanwhile are point-deleted (bounded by what fired meanwhile) and never fire again."""
    release = asyncio.Event()
    others_done = asyncio.Event()
    slow: list[int] = []
    done: list[int] = []

    async def effect(t: TimerTask) -> None:
        if t.data["i"] == 0:
            slow.append(t.task_id)
            await release.wait()
            return
        done.append(t.task_id)
        if len(done) == TIMERS_PER_RUN - 1:
            others_done.set()

    a = await _owner(store, "a", T0, effect)
    await _commit_timers(a, 0, 1, lambda i: T0 + 10 + i)  # 100 timers due T0+10 .. T0+109
    a.clock[0] = T0 + 200
    a.shard.timers.poke()
    await asyncio.wait_for(others_done.wait(), 5)  # the first one's effect is still waiting
    await a.shard.flush()
    assert a.shard.persisted_timer_ack_level == T0 + 10  # held by the slow one
    assert await _stored(store) == [(T0 + 10, slow[0])]  # the 99 others were deleted one by one
    release.set()
    await a.shard.timers.fire_due()
    await a.shard.flush()
    assert a.shard.persisted_timer_ack_level == T0 + 200
    assert await _stored(store) == [] and len(a.fired) == TIMERS_PER_RUN
    await a.shard.stop()


async def test_point_deletes_above_the_level_stay_within_the_tombstone_budget(
        store: ExecutionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timer stuck for long holds the level; of the timers fired after it, only the budget's
    worth are point-deleted (tombstones a scan from the level crosses), the rest stay as rows
    until the level passes them, when one range delete takes them all."""
    monkeypatch.setattr(shard_module, "MAX_TIMER_TOMBSTONES_ABOVE_ACK", 10)
    release = asyncio.Event()
    others_done = asyncio.Event()
    done: list[int] = []

    async def effect(t: TimerTask) -> None:
        if t.data["i"] == 0:
            await release.wait()
            return
        done.append(t.task_id)
        if len(done) == 2 * TIMERS_PER_RUN - 1:
            others_done.set()

    a = await _owner(store, "a", T0, effect)
    await _commit_timers(a, 0, 1, lambda i: T0 + 10 + i)
    await _commit_timers(a, 1, 1, lambda i: T0 + 10 + i)  # 200 timers due T0+10 .. T0+209
    a.clock[0] = T0 + 300
    a.shard.timers.poke()
    await asyncio.wait_for(others_done.wait(), 5)
    await a.shard.flush()
    stored = await _stored(store)
    assert a.shard.persisted_timer_ack_level == T0 + 10
    # the stuck one, and all fired after it but the earliest 10 (T0+11 .. T0+20), deleted one by one
    assert [f for f, _ in stored] == [T0 + 10] + [T0 + 10 + i for i in range(11, 200)]
    release.set()
    await a.shard.timers.fire_due()
    await a.shard.flush()
    assert a.shard.persisted_timer_ack_level == T0 + 300 and await _stored(store) == []
    await a.shard.stop()


async def test_a_timer_due_before_the_level_is_written_at_the_level(store: ExecutionStore) -> None:
    """A timer already due when written (say, due at the run's start time) would land below the
    range delete of the next flush: the shard moves it up to the level, so it fires, once."""
    a = await _owner(store, "a", T0)
    await _commit_timers(a, 0, 1, lambda i: T0 + STEP_MS + i)  # fired by the first rounds: the level moves
    await a.advance(T0 + 5 * STEP_MS)
    level = a.shard.persisted_timer_ack_level
    assert level == T0 + 2 * STEP_MS  # the round they fired in; idle rounds after it leave it there
    await _commit_timers(a, 1, 1, lambda i: T0 + i)  # due in the past: T0+100 .. T0+199
    assert {f for f, _ in await _stored(store)} == {level}
    await a.advance(T0 + 7 * STEP_MS)
    assert len(a.fired) == 2 * TIMERS_PER_RUN and a.shard.persisted_timer_ack_level > level
    assert await _stored(store) == []
    await a.shard.stop()


async def test_an_idle_shard_leaves_its_level_where_it_is(store: ExecutionStore) -> None:
    """The queue's level follows the clock; with no timer fired there is nothing to range-delete,
    so the flush writes nothing (no LWT per shard per interval on an idle cluster)."""
    a = await _owner(store, "a", T0)
    await _commit_timers(a, 0, 1, lambda i: T0 + STEP_MS + i)
    await a.advance(T0 + 2 * STEP_MS)
    level = a.shard.persisted_timer_ack_level
    assert level == T0 + 2 * STEP_MS and len(a.fired) == TIMERS_PER_RUN
    await a.advance(T0 + 60 * STEP_MS)  # 58 idle rounds
    assert a.shard.persisted_timer_ack_level == level
    await a.shard.stop()
    assert (await store.acquire_shard(SHARD, "b")).timer_ack_level == level  # as stored


async def test_the_shard_row_read_does_not_cross_deleted_runs(store: ExecutionStore) -> None:
    """Retention deletes run rows and current-run pointers; acquiring or renewing the shard reads
    its row with LIMIT 1, which must stop at the marker row before those tombstones."""
    s = await store.acquire_shard(SHARD, "a")
    n = 1100  # 2,200 tombstones (run row and pointer each): past Cassandra's warning at 1,000
    for i in range(0, n, 100):
        await store.write(ShardWrite(SHARD, s.range_id,
                                     [RunWrite(NS, f"wf{j:05d}", "r1", 2, "{}", None) for j in range(i, i + 100)],
                                     [CurrentRunWrite(CurrentRunRow(NS, f"wf{j:05d}", "r1", "completed"), None)
                                      for j in range(i, i + 100)]))
    for j in range(n):  # one at a time: concurrent LWTs on one partition would contend
        await store.delete_run(SHARD, s.range_id, NS, f"wf{j:05d}", "r1")
    info = await store.acquire_shard(SHARD, "b")
    assert info.range_id == s.range_id + 1
    if isinstance(store, CassandraStore):
        assert await _traced_tombstones(store, store._ps.shard_get.bind((SHARD,))) <= MAX_TOMBSTONES


# ---------------------------------------------------------------------- the queue's level

async def test_the_queue_level_is_the_earliest_unacked_timer_bounded_by_clock_and_horizon() -> None:
    store = SqliteStore(None)
    await store.open()
    clock = [T0]
    failures = [1]

    async def fire(t: TimerTask) -> None:
        if t.task_id == 1 and failures[0] > 0:
            failures[0] -= 1
            raise Unavailable("not yet")

    try:
        s = await store.acquire_shard(0, "a")
        await store.write(ShardWrite(0, s.range_id, timer_tasks=[TimerTaskRow(T0 + 10, 1, "{}"),
                                                                 TimerTaskRow(T0 + 20, 2, "{}")]))
        q = TimerQueueProcessor(0, store, lambda: clock[0], 60_000, fire, ack_level_ms=T0 + 5)
        assert q.ack_level() == T0  # nothing read yet: no later than the clock and the persisted level
        await q.fire_due()
        assert q.ack_level() == T0  # read, nothing due: the clock bounds it
        clock[0] = T0 + 100
        await q.fire_due()  # timer 1 fails and waits for its retry, timer 2 fired
        assert q.ack_level() == T0 + 10  # the failed one holds it at its own due time, not its retry's
        clock[0] = T0 + 100_000
        await q.fire_due()  # timer 1's retry fires
        assert failures == [0] and q.ack_level() == T0 + 100_000
        q.stop()
    finally:
        await store.close()


async def test_a_timer_read_cut_short_is_read_again() -> None:
    store = SqliteStore(None)
    await store.open()
    fired: list[int] = []

    async def fire(t: TimerTask) -> None:
        fired.append(t.task_id)

    try:
        s = await store.acquire_shard(0, "a")
        await store.write(ShardWrite(0, s.range_id, timer_tasks=[TimerTaskRow(T0 + 10, 1, "{}")]))
        q = TimerQueueProcessor(0, store, lambda: T0 + 100, 60_000, fire)
        real = store.read_timer_tasks
        store.read_timer_tasks = _failing_once(real)  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            await q.fire_due()
        assert q.ack_level() == 0  # nothing known
        await q.fire_due()
        assert fired == [1] and q.ack_level() == T0 + 100
        q.stop()
    finally:
        await store.close()


def _failing_once(real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    calls = [0]

    async def read(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise Unavailable("the store went away for a moment")
        return await real(*args)

    return read


# ---------------------------------------------------------------------- retention

async def test_the_timers_of_a_deleted_run_fire_once_and_are_passed_by_the_level(history_store: str) -> None:
    """A run closed with a timer pending (an hour out) is deleted after its retention; the timer
    still fires when due (nothing expects it), is acknowledged, and the level moves past it: no
    row of the deleted run is left for scans to read for ever."""
    env: Env = await make_env(None, make_config(retention="1s"))
    try:
        run = (await env.history.start_workflow(StartWorkflowRequest("wf", "app:order", "q"))).run_id
        await env.run_wf("wf", timer("t", 3_600_000), complete_wf("ok"))
        await env.settle()
        sid = env.history.shard_for("default", "wf")
        assert len(await env.store.read_timer_tasks(sid, (-1, 0), 1 << 62, 100)) >= 2  # the timer, the deletion
        await env.fire(1000)
        assert await env.store.get_run(sid, "default", "wf", run) is None
        await env.fire(3_600_000)
        await env.history.flush()
        shard = env.history.shard(sid)
        assert shard.persisted_timer_ack_level == env.clock.now
        assert await env.store.read_timer_tasks(sid, (-1, 0), 1 << 62, 100) == []
    finally:
        await close_env(env)


async def test_a_sqlite_database_of_an_older_build_gets_the_timer_ack_level_on_open(tmp_path: Any) -> None:
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE shards (shard_id INTEGER PRIMARY KEY, range_id INTEGER NOT NULL, owner TEXT NOT NULL,
                             transfer_ack_level INTEGER NOT NULL DEFAULT 0, updated_ms INTEGER NOT NULL DEFAULT 0);
        INSERT INTO shards (shard_id, range_id, owner, transfer_ack_level) VALUES (0, 4, 'old', 9);
    """)
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        info = await store.acquire_shard(0, "new")
        assert (info.range_id, info.transfer_ack_level, info.timer_ack_level) == (5, 9, 0)
        await store.update_shard(0, info.range_id, 9, [], timer_ack_level=T0)
        assert (await store.acquire_shard(0, "newer")).timer_ack_level == T0
    finally:
        await store.close()
    again = SqliteStore(path)  # opening again adds nothing twice
    await again.open()
    await again.close()


async def test_after_an_older_build_owned_the_shard_its_timers_are_read_from_the_start(
        store: ExecutionStore) -> None:
    """During a rolling upgrade an older build may take the shard and write a timer due before the
    level (it does not move timers up to it): the next owner ignores the level once."""
    if not isinstance(store, CassandraStore):
        pytest.skip("one SQLite file has one owner process: no rolling upgrade")
    s = await store.acquire_shard(SHARD, "new")
    await store.update_shard(SHARD, s.range_id, 0, [], timer_ack_level=T0 + 1000)
    assert (await store.renew_range(SHARD, s.range_id, "new")).timer_ack_level == T0 + 1000
    # An older build takes the shard the way it does (its statement has no level_range) and
    # writes a timer due before the level.
    old = s.range_id + 1
    session = store.cql.session
    await asyncio.to_thread(session.execute, "UPDATE executions SET range_id = %s, owner = 'old' WHERE shard_id = %s "
                                             "IF range_id = %s", (old + 1, SHARD, old))
    await asyncio.to_thread(session.execute, "INSERT INTO executions (shard_id, kind, namespace, workflow_id, run_id, "
                                             "fire_time_ms, task_id, data) VALUES (%s, 4, '', '', '', %s, 1, '{}')",
                            (SHARD, T0 + 10))
    info = await store.acquire_shard(SHARD, "new again")
    assert info.timer_ack_level == 0  # its queue reads from the start: the old build's timer is found
    found = await store.read_timer_tasks(SHARD, (info.timer_ack_level - 1, 1 << 62), T0 + 60_000, 100)
    assert [(t.fire_time_ms, t.task_id) for t in found] == [(T0 + 10, 1)]
