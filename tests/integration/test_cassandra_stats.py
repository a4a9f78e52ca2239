"""The Cassandra store counts its requests by kind (`legato bench cassandra-cost` reads them)."""

from __future__ import annotations

from history.store.base import CurrentRunRow, CurrentRunWrite, HistoryAppend, RunWrite, ShardWrite
from history.store.cassandra import KIND_APPEND, KIND_SHARD_TAKE, KIND_SHARD_WRITE, CassandraStore
from legato.config import StoreConfig

NS = "ns"


async def test_the_store_counts_each_kind_of_request(cassandra: StoreConfig) -> None:
    store = CassandraStore(cassandra)
    await store.open()
    try:
        stats = store.cql.stats
        before = stats.counts()
        info = await store.acquire_shard(0, "n")
        await store.commit([HistoryAppend(NS, "wf", "r1", 1, [(1, "e1"), (2, "e2")])],
                           ShardWrite(0, info.range_id, [RunWrite(NS, "wf", "r1", 3, "{}", None)],
                                      [CurrentRunWrite(CurrentRunRow(NS, "wf", "r1", "running"), None)]))
        await store.get_run(0, NS, "wf", "r1")
        await store.get_current_run(0, NS, "wf")
        after = stats.counts()
        grew = {k: (n - before.get(k, (0, 0))[0], s - before.get(k, (0, 0))[1]) for k, (n, s) in after.items()
                if n > before.get(k, (0, 0))[0]}
        assert grew[KIND_SHARD_WRITE] == (1, 3)  # the fence, the run, the pointer: one conditional batch
        assert grew[KIND_APPEND] == (1, 2)
        assert grew["read run"] == (1, 1) and grew["read current run"] == (1, 1)
        assert grew[KIND_SHARD_TAKE][0] == 1 and grew["read shard"][0] == 1
    finally:
        await store.close()
