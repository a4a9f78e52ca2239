"""The shard's group commit: batches cut at the store's byte bound, and what the shard does when
the store cannot tell whether a write took effect (WriteOutcomeUnknown)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from history.queues import TransferTask
from history.shard import CacheEntry, ShardContext, Update
from history.state import MutableState, Mutation
from history.store.base import (
    CurrentRunRow,
    CurrentRunWrite,
    HistoryAppend,
    ShardInfo,
    ShardWrite,
    TransferTaskRow,
    WriteOutcomeUnknown,
)
from history.store.sqlite import SqliteStore
from legato.config import Config, ConfigError, load_config
from legato.errors import ShardOwnershipLost, Unavailable

NS = "ns"


class FlakyStore(SqliteStore):
    """An in-memory SQLite store with a byte bound, that records its writes and renewals and can
    report an unknown outcome for the next write ("lost": not applied; "applied": applied)."""

    def __init__(self, max_batch_bytes: int | None = None) -> None:
        super().__init__(None)
        self.max_batch_bytes = max_batch_bytes
        self.writes: list[ShardWrite] = []
        self.renewals: list[tuple[int, int, str]] = []
        self.next_write: str = ""
        self.next_update: str = ""
        self.renew_errors: list[Exception] = []
        self.read_errors: list[Exception] = []

    async def commit(self, appends: Sequence[HistoryAppend], write: ShardWrite) -> None:
        self.writes.append(write)
        mode, self.next_write = self.next_write, ""
        if mode == "lost":
            raise WriteOutcomeUnknown("the write timed out (it was lost)")
        await super().commit(appends, write)
        if mode == "applied":
            raise WriteOutcomeUnknown("the write timed out (it was applied)")

    async def renew_range(self, shard_id: int, expected_range_id: int, owner: str) -> ShardInfo:
        self.renewals.append((shard_id, expected_range_id, owner))
        if self.renew_errors:
            raise self.renew_errors.pop(0)
        return await super().renew_range(shard_id, expected_range_id, owner)

    async def read_transfer_tasks(self, shard_id: int, after_task_id: int, limit: int) -> list[TransferTaskRow]:
        if self.read_errors:
            raise self.read_errors.pop(0)
        return await super().read_transfer_tasks(shard_id, after_task_id, limit)

    async def update_shard(self, shard_id: int, range_id: int, transfer_ack_level: int,
                           timer_deletes: Sequence[tuple[int, int]], timer_ack_level: int = 0,
                           outbox_ack_level: int = 0, drop_timers_before: int = 0) -> None:
        mode, self.next_update = self.next_update, ""
        if mode == "lost":
            raise WriteOutcomeUnknown("the ack flush timed out")
        await super().update_shard(shard_id, range_id, transfer_ack_level, timer_deletes, timer_ack_level,
                                   outbox_ack_level, drop_timers_before)


@dataclass
class Harness:
    store: FlakyStore
    shard: ShardContext
    dispatched: list[TransferTask] = field(default_factory=list)
    lost: list[ShardContext] = field(default_factory=list)

    def runs_per_write(self) -> list[int]:
        return [len(w.runs) for w in self.store.writes]


async def _harness(store: FlakyStore, **history: object) -> Harness:
    await store.open()
    info = await store.acquire_shard(0, "node")
    config = Config.model_validate({"history": {"num_shards": 1, **history}})
    h = Harness(store, None)  # type: ignore[arg-type]

    async def dispatch(t: TransferTask) -> None:
        h.dispatched.append(t)

    async def fire(_: object) -> None:
        return None

    h.shard = ShardContext(info, store, config, lambda: 0, dispatch, fire, h.lost.append)
    await h.shard.start()
    return h


@contextlib.asynccontextmanager
async def _running(store: FlakyStore, **history: object) -> AsyncIterator[Harness]:
    h = await _harness(store, **history)
    try:
        yield h
    finally:
        await h.shard.stop()
        await h.store.close()


@pytest.fixture
async def bounded() -> AsyncIterator[Harness]:
    h = await _harness(FlakyStore(max_batch_bytes=3500))
    yield h
    await h.shard.stop()
    await h.store.close()


def _state(wf: str, pad: int = 0) -> MutableState:
    st = MutableState(NS, wf, "r1", "type", "queue", 0, memo={"pad": "p" * pad} if pad else {})
    st.next_event_id = 2
    return st


def _update(wf: str, pad: int = 0) -> Update:
    """A workflow's first commit: one event, one transfer task, its current-run pointer."""
    m = Mutation(_state(wf, pad), 0, None, encoded=[(1, f"started {wf}")], transfer=[{"k": "wt", "wf": wf}])
    return Update([m], CurrentRunWrite(CurrentRunRow(NS, wf, "r1", "running"), None))


async def _commit_together(shard: ShardContext, updates: list[Update]) -> list[BaseException | None]:
    return await asyncio.gather(*(shard.commit(u) for u in updates), return_exceptions=True)


# ---------------------------------------------------------------------- the byte bound

async def test_batches_are_cut_at_the_stores_byte_bound(bounded: Harness) -> None:
    # about 1.6 KB each (state, task payload, row overheads): two fit in 3500 bytes, three do not
    results = await _commit_together(bounded.shard, [_update(f"wf{i}", pad=1000) for i in range(10)])
    assert results == [None] * 10
    assert bounded.runs_per_write() == [2] * 5
    for i in range(10):
        assert await bounded.store.get_run(0, NS, f"wf{i}", "r1") is not None


async def test_an_update_above_the_bound_goes_alone_and_its_neighbours_still_group(bounded: Harness) -> None:
    updates = [_update("a", 100), _update("b", 100), _update("huge", 10_000), _update("c", 100), _update("d", 100)]
    assert await _commit_together(bounded.shard, updates) == [None] * 5
    assert [[r.workflow_id for r in w.runs] for w in bounded.store.writes] == [["a", "b"], ["huge"], ["c", "d"]]


async def test_without_a_byte_bound_only_the_count_cuts_batches() -> None:
    async with _running(FlakyStore(max_batch_bytes=None), group_commit_max_batch=4) as h:
        assert await _commit_together(h.shard, [_update(f"wf{i}", pad=1000) for i in range(10)]) == [None] * 10
        assert h.runs_per_write() == [4, 4, 2]


async def _commit_one_after_another(shard: ShardContext, updates: list[Update]) -> list[asyncio.Task[None]]:
    """Queue the updates one at a time, letting the writer run between them."""
    tasks = []
    for u in updates:
        tasks.append(asyncio.create_task(shard.commit(u)))
        for _ in range(5):
            await asyncio.sleep(0)
    return tasks


@pytest.mark.parametrize(("max_wait_ms", "writes"), [(0.0, [1, 1, 1]), (5_000.0, [3])])
async def test_max_wait_gathers_updates_that_arrive_one_after_another(max_wait_ms: float, writes: list[int]) -> None:
    # without a wait each update finds the writer idle and goes alone; with one they wait for
    # company until the batch is full (here long before the 5 s are up)
    async with _running(FlakyStore(), group_commit_max_batch=3, group_commit_max_wait_ms=max_wait_ms) as h:
        tasks = await _commit_one_after_another(h.shard, [_update(f"wf{i}") for i in range(3)])
        await asyncio.gather(*tasks)
        assert h.runs_per_write() == writes


async def test_a_lone_update_waits_max_wait_and_updates_within_it_share_a_write() -> None:
    async with _running(FlakyStore(), group_commit_max_wait_ms=50.0) as h:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await h.shard.commit(_update("alone"))
        assert loop.time() - started >= 0.05
        assert h.runs_per_write() == [1]
        tasks = await _commit_one_after_another(h.shard, [_update("a"), _update("b")])
        await asyncio.gather(*tasks)
        assert h.runs_per_write() == [1, 2]


async def test_a_stop_during_the_wait_fails_the_waiting_update_at_once() -> None:
    async with _running(FlakyStore(), group_commit_max_wait_ms=5_000.0) as h:
        [task] = await _commit_one_after_another(h.shard, [_update("waiting")])
        await h.shard.stop()
        with pytest.raises(Unavailable) as e:
            await task
        assert e.value.reason == "ShuttingDown"
        assert h.store.writes == []


def test_the_wait_is_bounded_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"history\.group_commit_max_wait_ms: .*less than or equal to 5000"):
        load_config(env={"LEGATO_HISTORY__GROUP_COMMIT_MAX_WAIT_MS": "60000"})
    assert load_config(env={"LEGATO_HISTORY__GROUP_COMMIT_MAX_WAIT_MS": "200"}).history.group_commit_max_wait_ms == 200


# ---------------------------------------------------------------------- unknown outcomes

def _cache(h: Harness, wf: str) -> None:
    st = _state(wf)
    h.shard.runs.put(st.key, CacheEntry(st, [], h.shard.event_budget))
    h.shard.current.put((NS, wf), CurrentRunRow(NS, wf, "r1", "running"))


def _is_retryable_unknown(e: BaseException | None) -> bool:
    return isinstance(e, Unavailable) and not isinstance(e, ShardOwnershipLost) and e.reason == "WriteOutcomeUnknown"


async def test_an_unknown_outcome_fails_the_callers_retryably_and_forgets_their_runs(bounded: Harness) -> None:
    h, range_before = bounded, bounded.shard.range_id
    _cache(h, "a")
    _cache(h, "b")
    h.store.next_write = "lost"
    results = await _commit_together(h.shard, [_update("a"), _update("b")])
    assert all(_is_retryable_unknown(r) for r in results), results
    for wf in ("a", "b"):
        assert h.shard.runs.get((NS, wf, "r1")) is None and h.shard.current.get((NS, wf)) is None
    assert h.store.renewals == []  # not yet: before the next write
    await h.shard.commit(_update("c"))
    assert h.store.renewals == [(0, range_before, "node")]
    assert h.shard.range_id == range_before + 1 and h.store.writes[-1].range_id == range_before + 1
    await h.shard.transfer.wait_idle()
    assert [t.data["wf"] for t in h.dispatched] == ["c"]  # the lost write's tasks never run
    assert await h.store.get_run(0, NS, "a", "r1") is None


async def test_a_write_that_did_take_effect_hands_its_tasks_over_once_settled(bounded: Harness) -> None:
    h = bounded
    h.store.next_write = "applied"
    with pytest.raises(Unavailable, match="cannot tell whether a write took effect"):
        await h.shard.commit(_update("a"))
    await h.shard.transfer.wait_idle()
    assert h.dispatched == []
    await h.shard.flush()  # settles first: renews, finds the write, hands its task over
    assert len(h.store.renewals) == 1
    await h.shard.transfer.wait_idle()
    assert [t.data["wf"] for t in h.dispatched] == ["a"]


async def test_a_settle_whose_read_fails_settles_every_write_on_the_next_try(bounded: Harness) -> None:
    """Cassandra answers the renewal, then times out the read that tells whether the write took
    effect: no write of unknown outcome may be forgotten (its tasks would never run, and the ack
    flush would delete them)."""
    h = bounded
    h.store.next_write = "applied"
    assert all(_is_retryable_unknown(r) for r in await _commit_together(h.shard, [_update("a"), _update("b")]))
    h.store.read_errors = [Unavailable("Cassandra timed out the read")]
    with pytest.raises(Unavailable, match="cannot settle an earlier write"):
        await h.shard.commit(_update("c"))
    assert len(h.store.renewals) == 1
    await h.shard.commit(_update("c"))
    assert len(h.store.renewals) == 1  # renewed once: the second try only reads
    await h.shard.transfer.wait_idle()
    assert sorted(t.data["wf"] for t in h.dispatched) == ["a", "b", "c"]


async def test_a_renewal_that_finds_another_owner_drops_the_shard(bounded: Harness) -> None:
    h = bounded
    h.store.next_write = "lost"
    assert _is_retryable_unknown((await _commit_together(h.shard, [_update("a")]))[0])
    await h.store.acquire_shard(0, "other-node")
    with pytest.raises(ShardOwnershipLost):
        await h.shard.commit(_update("b"))
    assert h.lost == [h.shard] and h.shard.lost
    assert len(h.store.writes) == 1  # b was never sent


async def test_a_renewal_that_fails_leaves_the_shard_to_renew_before_the_next_write(bounded: Harness) -> None:
    h, range_before = bounded, bounded.shard.range_id
    h.store.next_write = "lost"
    await _commit_together(h.shard, [_update("a")])
    h.store.renew_errors = [Unavailable("Cassandra is down"), WriteOutcomeUnknown("renewal timed out")]
    for _ in range(2):
        assert _is_retryable_unknown((await _commit_together(h.shard, [_update("b")]))[0])
    assert len(h.store.writes) == 1  # nothing written while unsettled
    await h.shard.commit(_update("b"))
    assert [r[1] for r in h.store.renewals] == [range_before] * 3
    assert h.shard.range_id == range_before + 1


async def test_an_unknown_outcome_of_the_ack_flush_renews_before_the_next_write(bounded: Harness) -> None:
    h, range_before = bounded, bounded.shard.range_id
    await h.shard.commit(_update("a"))
    await h.shard.transfer.wait_idle()
    h.store.next_update = "lost"
    with pytest.raises(WriteOutcomeUnknown):
        await h.shard.flush()
    await h.shard.commit(_update("b"))
    assert h.store.renewals == [(0, range_before, "node")]
    assert h.store.writes[-1].range_id == range_before + 1
