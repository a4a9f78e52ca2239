"""Visibility upserts that arrive together share requests (history/visibility_batch.py), on the
real Cassandra node: fewer requests than upserts, every record written, the longest history
winning within a batch as across batches, and a failed request failing every caller."""

from __future__ import annotations

import asyncio

import pytest

from history.store.cql import Cql
from history.visibility_batch import PartitionBatcher
from history.visibility_cassandra import KIND_UPSERT, CassandraVisibilityStore
from legato.api import ListWorkflowsRequest, WorkflowExecutionInfo, WorkflowStatus
from legato.config import StoreConfig
from legato.errors import Unavailable
from tests.conftest import TEST_KEYSPACE

T0 = 1_795_255_200_000


def _info(i: int, length: int = 2, status: WorkflowStatus = WorkflowStatus.RUNNING) -> WorkflowExecutionInfo:
    return WorkflowExecutionInfo("ns", f"wf{i}", f"run{i}", "app:t", "q", status, T0 + i, history_length=length)


async def test_upserts_arriving_together_share_requests_and_all_land(cassandra: StoreConfig,
                                                                    cassandra_admin: Cql) -> None:
    store = CassandraVisibilityStore(cassandra_admin, TEST_KEYSPACE)
    before = cassandra_admin.stats.counts().get(KIND_UPSERT, (0, 0))
    await asyncio.gather(*(store.upsert(_info(i)) for i in range(40)))
    requests, statements = (a - b for a, b in zip(cassandra_admin.stats.counts()[KIND_UPSERT], before, strict=True))
    assert statements == 40 and requests < 40
    page = await store.list(ListWorkflowsRequest("ns", "", 100))
    assert sorted(e.workflow_id for e in page.executions) == sorted(f"wf{i}" for i in range(40))


async def test_the_longest_history_wins_within_a_batch(cassandra: StoreConfig, cassandra_admin: Cql) -> None:
    store = CassandraVisibilityStore(cassandra_admin, TEST_KEYSPACE)
    # the close (length 9) queued before a stale record (length 3) of the same run: both in one batch
    await asyncio.gather(store.upsert(_info(0, 1)), store.upsert(_info(1, 9, WorkflowStatus.COMPLETED)),
                         store.upsert(_info(1, 3)))
    page = await store.list(ListWorkflowsRequest("ns", "WorkflowId = 'wf1'", 10))
    assert [(e.status, e.history_length) for e in page.executions] == [(WorkflowStatus.COMPLETED, 9)]


async def test_a_failed_request_fails_every_write_it_carried(cassandra: StoreConfig, cassandra_admin: Cql) -> None:
    """Values Cassandra cannot take (a number for a text column): every caller of the batch gets
    the error, none waits for ever, and the next write is sent afresh."""
    batcher = PartitionBatcher(cassandra_admin, f"INSERT INTO {TEST_KEYSPACE}.visibility_buckets (namespace, bucket) "
                                                "VALUES (?, ?)", "test")
    results = await asyncio.gather(*(batcher.write("p", [i, i]) for i in range(5)), return_exceptions=True)
    assert len(results) == 5 and all(isinstance(r, Exception) and "encode" in str(r) for r in results)
    await batcher.write("p", ["ns", 7])  # a good one goes through
    with pytest.raises(Exception, match="encode"):
        await batcher.write("p", [9, 9])


async def test_a_failed_read_is_one_clear_error_naming_the_query(cassandra_admin: Cql) -> None:
    """Cassandra refusing a read (here: the keyspace is not there) is an Unavailable naming what
    was asked and why, not an internal error carrying the driver's traceback."""
    store = CassandraVisibilityStore(cassandra_admin, "legato_no_such_keyspace")
    query = "WorkflowType = 'app:t'"
    with pytest.raises(Unavailable) as listed:
        await store.list(ListWorkflowsRequest("ns", query, 10))
    with pytest.raises(Unavailable) as counted:
        await store.count_by_status("ns", query)
    for e, what in ((listed.value, "listing workflows"), (counted.value, "counting workflows")):
        assert e.reason == "StoreUnavailable"
        assert e.message.startswith(f"visibility on Cassandra: {what} ({query!r}) failed: ")
        assert "legato_no_such_keyspace" in e.message and "\n" not in e.message, e.message
