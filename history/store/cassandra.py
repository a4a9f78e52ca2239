"""The Cassandra execution store: one conditional batch per shard write (see base.py's rules).

Layout (history/store/cassandra_schema.py creates it):

* ``executions``, PARTITION KEY = shard_id. The shard row is the partition's STATIC columns
  (range_id, owner, transfer_ack_level, timer_ack_level, timer_outbox_ack_level, timer_queue,
  updated_ms); the clustering rows, keyed
  (kind, namespace, workflow_id, run_id, fire_time_ms, task_id) as in Temporal's schema, are a
  marker row (kind 0, see "Tombstones" below), the current-run pointers (kind 1), the runs' mutable
  state (kind 2), transfer tasks (kind 3), timer tasks (kind 4) and the Kafka mode's timer outbox
  (kind 5: keyed by task_id, the due time in due_ms); key columns a kind does not use hold '' or
  0, so each queue is one clustering slice in the order it is read. A write with several transfer
  tasks (outbox rows) packs them into ONE row of the kind, keyed by the greatest of their task
  ids, the tasks in ``tasks`` (see cassandra_schema.py, version 4): the ack flush's range delete
  takes it only once every task in it is acknowledged. Because everything a state change
  touches lives in ONE partition, `write` is ONE conditional ``BATCH`` (one LWT):
  ``UPDATE .. SET range_id = ? .. IF range_id = ?`` (the fence) + per run ``IF next_event_id = ?``
  or ``IF NOT EXISTS`` + per current-run pointer ``IF current_run_id = ?`` or ``IF NOT EXISTS`` +
  plain inserts of the task rows, at the configured serial consistency.
* ``history_events``, PARTITION KEY = run, clustering (event_id, txn_id DESC): appended before the
  conditional write (one unlogged single-partition batch per run, runs in parallel, retried freely:
  an upsert keyed by (event_id, txn_id) is idempotent).

What Cassandra 5.0 allows in a conditional batch, found by experiment (and relied on here):

* conditions on several clustering rows of the one partition, a condition on a STATIC column
  (range_id), ``IF NOT EXISTS`` on some rows and ``IF col = ?`` on others, unconditional inserts
  and a clustering-range DELETE (the transfer ack) in the same batch: all accepted, all-or-nothing;
* NOT two statements on the same row with ``IF NOT EXISTS`` and ``IF`` ("Cannot mix IF conditions
  and IF NOT EXISTS for the same row"): a batch never carries one row twice (the shard serializes
  the updates of a workflow id, so a group commit holds at most one update per run);
* a rejected batch returns ``[applied] = false`` and, for EVERY conditioned row that exists, its
  key and the conditioned columns (the static range_id in each row, or in a key-less row when only
  the static row exists); rows that do not exist are absent. `_rejection` compares those with the
  expectations to tell ShardOwnershipLost (range_id differs) from RunConditionFailed (naming rows).
* multi-column slices mix with a single-column bound: ``(fire_time_ms, task_id) > (?, ?) AND
  fire_time_ms <= ?`` reads the timer queue in order.

Tombstones. A deleted row stays in the partition as a tombstone until compaction purges it
(gc_grace_seconds later, 10 days by default), and every read whose slice crosses it pays for it;
Cassandra warns at 1,000 per read and fails the read at 100,000. So no read here starts below what
was deleted: the transfer queue is read above transfer_ack_level and the timer queue from
timer_ack_level (the shard's queues start there), and what lies below each level goes with ONE
range delete in the ack flush (a range tombstone is one marker, skipped by slices that start past
it) instead of a tombstone per task. Only timers that fired out of order above the timer ack level
are point-deleted; the level passes them soon. The timer outbox is read above
timer_outbox_ack_level and range-deleted at or below it, as the transfer queue is. The shard row
itself is read with LIMIT 1, which reads the static row and the partition's first clustering row:
the kind-0 marker row, written with every acquisition, sorts before the run rows that retention
deletes, so that read never crosses their tombstones either.

Everything in `executions` is written through Paxos (LWTs only), never mixed with plain writes of
the same cells, so LWT timestamps and client timestamps never compete. Conditional statements
never retry in the driver (FallthroughRetryPolicy): a retried CAS whose first attempt did apply
would be reported as a condition failure. A conditional write that timed out after being sent is
`WriteOutcomeUnknown`; the shard's owner then renews its range_id (an LWT on the same partition,
which also finishes any Paxos round in flight) before it writes again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from cassandra import ConsistencyLevel, OperationTimedOut, RequestValidationException, UnsupportedOperation
from cassandra import Unavailable as CassandraUnavailable
from cassandra.cluster import Cluster, NoHostAvailable
from cassandra.policies import FallthroughRetryPolicy
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage
from cassandra.protocol import RequestValidationException as ProtocolValidationError
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from history.store import cassandra_schema as schema
from history.store.base import (
    TIMER_QUEUE_STORE,
    CurrentRunRow,
    HistoryAppend,
    RunConditionFailed,
    RunRow,
    ShardInfo,
    ShardWrite,
    TimerTaskRow,
    TransferTaskRow,
    WriteOutcomeUnknown,
    check_timer_queue,
    history_read_end,
    one_event_per_id,
)
from history.store.cql import Cql, Row, connect
from history.store.metered import metered
from legato import metrics
from legato.config import StoreConfig
from legato.errors import ServiceError, ShardOwnershipLost, Unavailable

_NO_RETRY = FallthroughRetryPolicy()
_LWT_APPLIED, _LWT_REJECTED, _LWT_UNKNOWN, _LWT_FAILED = (
    metrics.cassandra_lwts.labels(r) for r in ("applied", "rejected", "unknown", "failed"))
TIMER_DELETES_PER_BATCH = 500  # update_shard: timer deletes carried by one conditional batch
# Runs (partitions) whose events share one unlogged batch, at most: Cassandra's default
# unlogged_batch_across_partitions_warn_threshold, above which every such batch logs a warning.
APPEND_BATCH_PARTITIONS = 10
_ROW_OVERHEAD = 64  # bytes a row adds to a batch beyond its values (keys, cell headers), roughly

# Exceptions after which a request certainly had no effect (refused before it was carried out).
_NOT_APPLIED: tuple[type[BaseException], ...] = (
    CassandraUnavailable, NoHostAvailable, RequestValidationException, ProtocolValidationError,
    OverloadedErrorMessage, IsBootstrappingErrorMessage, UnsupportedOperation, TypeError, ValueError)

_EXEC = "{ks}.executions"
_RUN_KEY = "shard_id = ? AND kind = 2 AND namespace = ? AND workflow_id = ? AND run_id = ? AND fire_time_ms = 0 " \
           "AND task_id = 0"
_CURRENT_KEY = "shard_id = ? AND kind = 1 AND namespace = ? AND workflow_id = ? AND run_id = '' AND " \
               "fire_time_ms = 0 AND task_id = 0"
_QUEUE = "shard_id = ? AND kind = {kind} AND namespace = '' AND workflow_id = '' AND run_id = ''"

# name -> (CQL, conditional). Conditional ones never retry in the driver; the others are
# idempotent and may be retried on another node.
_STATEMENTS: dict[str, tuple[str, bool]] = {
    "meta_get": ("SELECT value FROM {ks}.cluster_metadata WHERE key = ?", False),
    "meta_create": ("INSERT INTO {ks}.cluster_metadata (key, value) VALUES (?, ?) IF NOT EXISTS", True),
    # keys other than num_shards (the retention scan's cursors): plain writes, last one wins
    "meta_put": ("INSERT INTO {ks}.cluster_metadata (key, value) VALUES (?, ?)", False),
    # LIMIT 1: the static row and the first clustering row, the kind-0 marker (see the module doc)
    "shard_get": (f"SELECT range_id, owner, transfer_ack_level, timer_ack_level, level_range, updated_ms, "
                  f"timer_outbox_ack_level, timer_queue, timer_rows_dropped_before, outbox_range FROM {_EXEC} "
                  "WHERE shard_id = ? LIMIT 1", False),
    # IF NOT EXISTS on the marker row: only a new partition has none (see acquire_shard)
    "shard_create": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, task_id, "
                     "range_id, owner, transfer_ack_level, timer_ack_level, level_range, updated_ms, "
                     "timer_outbox_ack_level, timer_queue, timer_rows_dropped_before, outbox_range) "
                     "VALUES (?, 0, '', '', '', 0, 0, 1, ?, 0, 0, 1, ?, 0, ?, 0, 1) IF NOT EXISTS", True),
    "shard_take": (f"UPDATE {_EXEC} SET range_id = ?, level_range = ?, outbox_range = ?, owner = ?, updated_ms = ? "
                   "WHERE shard_id = ? IF range_id = ?", True),
    # in acquire_shard's batch only (renew_range keeps the queue): the queue this owner keeps
    "shard_queue": (f"UPDATE {_EXEC} SET timer_queue = ? WHERE shard_id = ?", False),
    "shard_marker": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, task_id) "
                     "VALUES (?, 0, '', '', '', 0, 0)", False),
    "fence": (f"UPDATE {_EXEC} SET range_id = ? WHERE shard_id = ? IF range_id = ?", True),
    "ack": (f"UPDATE {_EXEC} SET transfer_ack_level = ?, timer_ack_level = ? WHERE shard_id = ? IF range_id = ?",
            True),
    "ack_transfer": (f"UPDATE {_EXEC} SET transfer_ack_level = ? WHERE shard_id = ? IF range_id = ?", True),
    "transfer_ack_delete": (f"DELETE FROM {_EXEC} WHERE {_QUEUE.format(kind=3)} AND fire_time_ms = 0 "
                            "AND task_id <= ?", False),
    "timer_ack_delete": (f"DELETE FROM {_EXEC} WHERE {_QUEUE.format(kind=4)} AND fire_time_ms < ?", False),
    # the timer outbox level: a plain update inside update_shard's conditional batch (so through Paxos)
    "outbox_ack": (f"UPDATE {_EXEC} SET timer_outbox_ack_level = ? WHERE shard_id = ?", False),
    "timers_dropped": (f"UPDATE {_EXEC} SET timer_rows_dropped_before = ? WHERE shard_id = ?", False),
    "outbox_ack_delete": (f"DELETE FROM {_EXEC} WHERE {_QUEUE.format(kind=5)} AND fire_time_ms = 0 "
                          "AND task_id <= ?", False),
    "timer_delete": (f"DELETE FROM {_EXEC} WHERE {_QUEUE.format(kind=4)} AND fire_time_ms = ? AND task_id = ?",
                     False),
    "current_get": (f"SELECT current_run_id, status, start_request_id, start_time_ms FROM {_EXEC} "
                    f"WHERE {_CURRENT_KEY}", False),
    "current_create": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, task_id, "
                       "current_run_id, status, start_request_id, start_time_ms) "
                       "VALUES (?, 1, ?, ?, '', 0, 0, ?, ?, ?, ?) IF NOT EXISTS", True),
    "current_update": (f"UPDATE {_EXEC} SET current_run_id = ?, status = ?, start_request_id = ?, start_time_ms = ? "
                       f"WHERE {_CURRENT_KEY} IF current_run_id = ?", True),
    "run_get": (f"SELECT next_event_id, state FROM {_EXEC} WHERE {_RUN_KEY}", False),
    # the retention scan (history/retention_scan.py): the shard's run rows in key order
    "runs_first": (f"SELECT namespace, workflow_id, run_id, next_event_id, state FROM {_EXEC} WHERE shard_id = ? "
                   "AND kind = 2 LIMIT ?", False),
    "runs_after": (f"SELECT namespace, workflow_id, run_id, next_event_id, state FROM {_EXEC} WHERE shard_id = ? "
                   "AND kind = 2 AND (namespace, workflow_id, run_id) > (?, ?, ?) LIMIT ?", False),
    "run_create": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, task_id, "
                   "next_event_id, state) VALUES (?, 2, ?, ?, ?, 0, 0, ?, ?) IF NOT EXISTS", True),
    # The state goes as text. Compressed (zlib level 1: 2x smaller for a child, 7x for a parent
    # with 100 open children, whose 24 KB were about half the bytes the children scenario sent
    # through Paxos) it made no difference to the node's CPU per child on the cluster beyond the
    # spread between runs of one build (README, "Load testing"), so it was not kept.
    "run_update": (f"UPDATE {_EXEC} SET next_event_id = ?, state = ? WHERE {_RUN_KEY} IF next_event_id = ?", True),
    "transfer_insert": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, "
                        "task_id, data) VALUES (?, 3, '', '', '', 0, ?, ?)", False),
    "timer_insert": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, "
                     "task_id, data) VALUES (?, 4, '', '', '', ?, ?, ?)", False),
    "outbox_insert": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, "
                      "task_id, due_ms, data) VALUES (?, 5, '', '', '', 0, ?, ?, ?)", False),
    "outbox_read": (f"SELECT due_ms, task_id, data, tasks, timer_outbox_ack_level FROM {_EXEC} "
                    f"WHERE {_QUEUE.format(kind=5)} AND fire_time_ms = 0 AND task_id > ? LIMIT ?", False),
    # a write's tasks packed in one row keyed by the greatest of their ids (schema version 4)
    "transfer_pack": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, "
                      "task_id, tasks) VALUES (?, 3, '', '', '', 0, ?, ?)", False),
    "outbox_pack": (f"INSERT INTO {_EXEC} (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, "
                    "task_id, tasks) VALUES (?, 5, '', '', '', 0, ?, ?)", False),
    "transfer_read": (f"SELECT task_id, data, tasks, transfer_ack_level FROM {_EXEC} WHERE {_QUEUE.format(kind=3)} "
                      "AND fire_time_ms = 0 AND task_id > ? LIMIT ?", False),
    "timer_read": (f"SELECT fire_time_ms, task_id, data FROM {_EXEC} WHERE {_QUEUE.format(kind=4)} "
                   "AND (fire_time_ms, task_id) > (?, ?) AND fire_time_ms <= ? LIMIT ?", False),
    "event_insert": ("INSERT INTO {ks}.history_events (namespace, workflow_id, run_id, event_id, txn_id, data) "
                     "VALUES (?, ?, ?, ?, ?, ?)", False),
    "events_read": ("SELECT event_id, data FROM {ks}.history_events WHERE namespace = ? AND workflow_id = ? "
                    "AND run_id = ? AND event_id >= ? AND event_id < ?", False),
    # retention (delete_run): a partition delete of the run's events; the run row and the pointer
    # in one conditional batch with the fence
    "events_delete": ("DELETE FROM {ks}.history_events WHERE namespace = ? AND workflow_id = ? AND run_id = ?",
                      False),
    "run_delete": (f"DELETE FROM {_EXEC} WHERE {_RUN_KEY}", False),
    "current_delete": (f"DELETE FROM {_EXEC} WHERE {_CURRENT_KEY} IF current_run_id = ?", True),
}


# What `Cql.stats` counts each statement's requests as (`legato bench cassandra-cost`); the
# conditional batches are labelled where they are sent.
_KINDS = {"meta_get": "read cluster metadata", "meta_create": "LWT cluster metadata", "shard_get": "read shard",
          "shard_create": "LWT shard take", "current_get": "read current run", "run_get": "read run",
          "runs_first": "read runs (retention scan)", "runs_after": "read runs (retention scan)",
          "transfer_read": "read transfer queue", "timer_read": "read timer queue", "outbox_read": "read timer outbox",
          "event_insert": "append history", "events_read": "read history", "events_delete": "delete history"}
KIND_SHARD_WRITE = "LWT shard write"
KIND_ACK_FLUSH = "LWT ack flush"
KIND_SHARD_TAKE = "LWT shard take"
KIND_DELETE_RUN = "LWT delete run"
KIND_APPEND = _KINDS["event_insert"]


class _Prepared:
    """The store's prepared statements, by name (prepared once, in `open`)."""

    meta_get: PreparedStatement
    meta_create: PreparedStatement
    meta_put: PreparedStatement
    runs_first: PreparedStatement
    runs_after: PreparedStatement
    shard_get: PreparedStatement
    shard_create: PreparedStatement
    shard_take: PreparedStatement
    shard_marker: PreparedStatement
    shard_queue: PreparedStatement
    outbox_ack: PreparedStatement
    timers_dropped: PreparedStatement
    outbox_ack_delete: PreparedStatement
    outbox_insert: PreparedStatement
    outbox_read: PreparedStatement
    fence: PreparedStatement
    ack: PreparedStatement
    ack_transfer: PreparedStatement
    transfer_ack_delete: PreparedStatement
    timer_ack_delete: PreparedStatement
    timer_delete: PreparedStatement
    current_get: PreparedStatement
    current_create: PreparedStatement
    current_update: PreparedStatement
    run_get: PreparedStatement
    run_create: PreparedStatement
    run_update: PreparedStatement
    transfer_insert: PreparedStatement
    transfer_pack: PreparedStatement
    outbox_pack: PreparedStatement
    timer_insert: PreparedStatement
    transfer_read: PreparedStatement
    timer_read: PreparedStatement
    event_insert: PreparedStatement
    events_read: PreparedStatement
    events_delete: PreparedStatement
    run_delete: PreparedStatement
    current_delete: PreparedStatement


@metered("cassandra")
class CassandraStore:
    """`history.store.base.ExecutionStore` on Cassandra. `cql` and `keyspace` are shared with the
    visibility store once `open` has connected."""

    def __init__(self, cfg: StoreConfig) -> None:
        self.cfg = cfg
        self.keyspace = schema.check_keyspace_name(cfg.cassandra_keyspace)
        # The shard's group commit cuts its batches at this estimated size (Cassandra refuses a
        # batch above batch_size_fail_threshold).
        self.max_batch_bytes: int | None = cfg.cassandra_max_batch_bytes
        self.lwt_count = 0  # conditional statements and batches sent (benchmarks report LWTs per workflow)
        self.run_write_count = 0  # state transitions (run rows) committed by those batches
        self._cluster: Cluster | None = None
        self._cql: Cql | None = None
        self._ps = _Prepared()
        self._serial = ConsistencyLevel.name_to_value[cfg.cassandra_serial_consistency]

    # ------------------------------------------------------------------ lifecycle

    @property
    def cql(self) -> Cql:
        if self._cql is None:
            raise Unavailable("the Cassandra store is not open", reason="StoreUnavailable")
        return self._cql

    async def open(self) -> None:
        """Connect, refuse a keyspace whose schema is missing or of another version, and prepare
        every statement (the hot path never prepares)."""
        if self._cql is not None:
            return
        cluster, session = await asyncio.to_thread(connect, self.cfg, None)
        try:
            cql = Cql(session)
            await schema.check_schema(cql, self.keyspace, ",".join(self.cfg.cassandra_hosts))
            await asyncio.to_thread(session.set_keyspace, self.keyspace)
            await self._prepare_all(cql)
        except BaseException:
            await asyncio.to_thread(cluster.shutdown)
            raise
        self._cluster, self._cql = cluster, cql

    async def _prepare_all(self, cql: Cql) -> None:
        names = list(_STATEMENTS)
        for name, kind in _KINDS.items():
            cql.label(_STATEMENTS[name][0].format(ks=self.keyspace), kind)
        try:
            prepared = await asyncio.gather(*(cql.prepare_async(_STATEMENTS[n][0].format(ks=self.keyspace))
                                              for n in names))
        except Exception as e:
            raise _unavailable(e, "preparing statements") from e
        for name, ps in zip(names, prepared, strict=True):
            if _STATEMENTS[name][1]:
                ps.retry_policy = _NO_RETRY
            else:
                ps.is_idempotent = True
            setattr(self._ps, name, ps)

    async def close(self) -> None:
        cluster, self._cluster, self._cql = self._cluster, None, None
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    # ------------------------------------------------------------------ requests

    async def _read(self, ps: Any, params: Sequence[Any] | None, what: str) -> list[Row]:
        try:
            return await self.cql.execute(ps, params)
        except Exception as e:
            raise _unavailable(e, what) from e

    async def _lwt(self, stmt: Any, params: Sequence[Any] | None, what: str, kind: str = "") -> list[Row]:
        """One conditional request; its rows (the first column of the first row: applied)."""
        cql = self.cql
        self.lwt_count += 1
        try:
            rows = await cql.execute(stmt, params, kind=kind)
        except Exception as e:
            err = _conditional_error(e, what)
            _LWT_UNKNOWN.inc() if isinstance(err, WriteOutcomeUnknown) else _LWT_FAILED.inc()
            raise err from e
        (_LWT_APPLIED if not rows or rows[0][0] else _LWT_REJECTED).inc()
        return rows

    def _batch(self) -> BatchStatement:
        return BatchStatement(batch_type=BatchType.UNLOGGED, retry_policy=_NO_RETRY)

    # ------------------------------------------------------------------ cluster

    async def init_cluster(self, num_shards: int) -> int:
        rows = await self._lwt(self._ps.meta_create, ("num_shards", str(num_shards)), "recording num_shards")
        if rows[0][0]:
            return num_shards
        return int(rows[0].value)

    # ------------------------------------------------------------------ shards

    async def acquire_shard(self, shard_id: int, owner: str, timer_queue: str = TIMER_QUEUE_STORE) -> ShardInfo:
        """Read the shard row at serial consistency (finishing any Paxos round in flight), then
        take it with range_id + 1 on the condition that nobody else did in between."""
        bound = self._ps.shard_get.bind((shard_id,))
        bound.consistency_level = self._serial
        rows = await self._read(bound, None, f"reading shard {shard_id}")
        now = _now_ms()
        if not rows or rows[0].range_id is None:
            res = await self._lwt(self._ps.shard_create, (shard_id, owner, now, timer_queue),
                                  f"creating shard {shard_id}")
            if not res[0][0]:
                raise ShardOwnershipLost(f"shard {shard_id}: another history node created it first",
                                         reason="ShardOwnershipLost")
            return ShardInfo(shard_id, 1, owner, 0, now)
        old = int(rows[0].range_id)
        check_timer_queue(shard_id, rows[0].timer_queue, timer_queue)
        take = self._take(shard_id, old, owner, now)
        take.add(self._ps.shard_queue, (timer_queue, shard_id))
        res = await self._lwt(take, None, f"acquiring shard {shard_id}", KIND_SHARD_TAKE)
        if not res[0][0]:
            raise ShardOwnershipLost(f"shard {shard_id}: lost the race to acquire it (range_id {old} became "
                                     f"{_show(getattr(res[0], 'range_id', None))})", reason="ShardOwnershipLost")
        return _shard_info(shard_id, old + 1, owner, rows[0], now)

    def _take(self, shard_id: int, expected_range_id: int, owner: str, now: int) -> BatchStatement:
        """range_id + 1 if it is still `expected_range_id`, with the kind-0 marker row (which a
        partition made by an older build lacks) in the same conditional batch."""
        batch = self._batch()
        new = expected_range_id + 1
        batch.add(self._ps.shard_take, (new, new, new, owner, now, shard_id, expected_range_id))
        batch.add(self._ps.shard_marker, (shard_id,))
        return batch

    async def renew_range(self, shard_id: int, expected_range_id: int, owner: str) -> ShardInfo:
        now = _now_ms()
        res = await self._lwt(self._take(shard_id, expected_range_id, owner, now), None,
                              f"renewing the range of shard {shard_id}", KIND_SHARD_TAKE)
        rows = await self._read(self._ps.shard_get, (shard_id,), f"reading shard {shard_id}")
        if not res[0][0]:
            # An earlier renewal of ours whose outcome was unknown may have taken effect: the
            # shard then holds exactly the next range_id with our (per-start unique) owner.
            mine = rows and rows[0].owner == owner and rows[0].range_id == expected_range_id + 1
            if not mine:
                raise _lost(shard_id, expected_range_id, _range_of(res))
        return _shard_info(shard_id, expected_range_id + 1, owner, rows[0] if rows else None, now)

    async def update_shard(self, shard_id: int, range_id: int, transfer_ack_level: int,
                           timer_deletes: Sequence[tuple[int, int]], timer_ack_level: int = 0,
                           outbox_ack_level: int = 0, drop_timers_before: int = 0) -> None:
        """The ack levels, the range deletes below them (acknowledged transfer tasks, fired timers,
        published timer outbox rows) and the first point timer deletes in one conditional batch;
        many point deletes take more batches (each fenced, each idempotent)."""
        ps = self._ps
        deletes = list(timer_deletes)
        first = True
        while first or deletes:
            chunk, deletes = deletes[:TIMER_DELETES_PER_BATCH], deletes[TIMER_DELETES_PER_BATCH:]
            batch = self._batch()
            if first:
                if timer_ack_level > 0:
                    batch.add(ps.ack, (transfer_ack_level, timer_ack_level, shard_id, range_id))
                    batch.add(ps.timer_ack_delete, (shard_id, timer_ack_level))
                else:  # 0: the timer level stays as it is
                    batch.add(ps.ack_transfer, (transfer_ack_level, shard_id, range_id))
                batch.add(ps.transfer_ack_delete, (shard_id, transfer_ack_level))
                if outbox_ack_level > 0:
                    batch.add(ps.outbox_ack, (outbox_ack_level, shard_id))
                    batch.add(ps.outbox_ack_delete, (shard_id, outbox_ack_level))
                if drop_timers_before > 0:
                    batch.add(ps.timers_dropped, (drop_timers_before, shard_id))
                    batch.add(ps.timer_ack_delete, (shard_id, drop_timers_before))
            else:
                batch.add(ps.fence, (range_id, shard_id, range_id))
            for fire, task_id in chunk:
                batch.add(ps.timer_delete, (shard_id, fire, task_id))
            rows = await self._lwt(batch, None, f"updating shard {shard_id}", KIND_ACK_FLUSH)
            if not rows[0][0]:
                raise _lost(shard_id, range_id, _range_of(rows))
            first = False

    # ------------------------------------------------------------------ runs

    async def get_current_run(self, shard_id: int, namespace: str, workflow_id: str) -> CurrentRunRow | None:
        rows = await self._read(self._ps.current_get, (shard_id, namespace, workflow_id),
                                f"reading the current run of {workflow_id!r}")
        if not rows:
            return None
        r = rows[0]
        return CurrentRunRow(namespace, workflow_id, r[0], r[1], r[2] or "", r[3] or 0)

    async def get_run(self, shard_id: int, namespace: str, workflow_id: str, run_id: str) -> RunRow | None:
        rows = await self._read(self._ps.run_get, (shard_id, namespace, workflow_id, run_id),
                                f"reading run {run_id} of {workflow_id!r}")
        if not rows:
            return None
        return RunRow(namespace, workflow_id, run_id, rows[0][0], rows[0][1])

    async def scan_runs(self, shard_id: int, after: tuple[str, str, str] | None, limit: int) -> list[RunRow]:
        if after is None:
            rows = await self._read(self._ps.runs_first, (shard_id, limit), f"scanning the runs of shard {shard_id}")
        else:
            rows = await self._read(self._ps.runs_after, (shard_id, *after, limit),
                                    f"scanning the runs of shard {shard_id}")
        return [RunRow(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

    async def get_metadata(self, key: str) -> str | None:
        rows = await self._read(self._ps.meta_get, (key,), f"reading {key!r} of the cluster metadata")
        return str(rows[0][0]) if rows else None

    async def put_metadata(self, key: str, value: str) -> None:
        await self._read(self._ps.meta_put, (key, value), f"writing {key!r} of the cluster metadata")

    async def append_history(self, appends: Sequence[HistoryAppend]) -> None:
        """The events of every run in as few requests as can be routed well: one unlogged batch
        per node (cut at max_batch_bytes), all in parallel."""
        requests = self._event_requests(appends)
        try:
            if len(requests) == 1:
                await self.cql.execute(requests[0], kind=KIND_APPEND)
            elif requests:
                await asyncio.gather(*(self.cql.execute(r, kind=KIND_APPEND) for r in requests))
        except Exception as e:
            raise _unavailable(e, "appending history events") from e

    def _event_requests(self, appends: Sequence[HistoryAppend]) -> list[Any]:
        """The requests that append the events: the runs grouped by the first replica of their
        partition (a group commit's runs are many partitions; one request per run costs the node
        its per-request work for each, measured 40% more CPU per run than batches of 15 runs),
        each group an unlogged batch routed to that replica, cut at max_batch_bytes and at
        APPEND_BATCH_PARTITIONS runs; a lone event is a plain statement (no batch size limit
        applies to it)."""
        ps = self._ps.event_insert
        groups: dict[Any, list[tuple[int, int, Any]]] = {}
        for n, a in enumerate(appends):
            rows = [(n, len(data) + _ROW_OVERHEAD,
                     ps.bind((a.namespace, a.workflow_id, a.run_id, eid, a.txn_id, data))) for eid, data in a.events]
            if rows:
                groups.setdefault(self._first_replica(rows[0][2]), []).extend(rows)
        limit = self.max_batch_bytes or (1 << 62)
        out: list[Any] = []
        for rows in groups.values():
            for chunk in _cut(rows, limit, APPEND_BATCH_PARTITIONS):
                if len(chunk) == 1:
                    out.append(chunk[0])
                    continue
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)  # routed by its first statement
                batch.is_idempotent = True
                for stmt in chunk:
                    batch.add(stmt)
                out.append(batch)
        return out

    def _first_replica(self, bound: Any) -> Any:
        """The first replica of a bound statement's partition (None if the driver does not know)."""
        cluster = self._cluster
        if cluster is None:
            return None
        replicas = cluster.metadata.get_replicas(self.keyspace, bound.routing_key)
        return replicas[0] if replicas else None

    async def write(self, write: ShardWrite) -> None:
        rows = await self._lwt(self._shard_batch(write), None, f"writing shard {write.shard_id}", KIND_SHARD_WRITE)
        if not rows[0][0]:
            raise _rejection(write, rows)
        self.run_write_count += len(write.runs)
        metrics.cassandra_lwt_transitions.observe(len(write.runs))

    def _shard_batch(self, w: ShardWrite) -> BatchStatement:
        ps = self._ps
        s = w.shard_id
        batch = self._batch()
        batch.add(ps.fence, (w.range_id, s, w.range_id))
        for r in w.runs:
            if r.expected_next_event_id is None:
                batch.add(ps.run_create, (s, r.namespace, r.workflow_id, r.run_id, r.next_event_id, r.state))
            else:
                batch.add(ps.run_update, (r.next_event_id, r.state, s, r.namespace, r.workflow_id, r.run_id,
                                          r.expected_next_event_id))
        for cw in w.current_runs:
            c = cw.row
            if cw.expected_run_id is None:
                batch.add(ps.current_create, (s, c.namespace, c.workflow_id, c.run_id, c.status, c.start_request_id,
                                              c.start_time_ms))
            else:
                batch.add(ps.current_update, (c.run_id, c.status, c.start_request_id, c.start_time_ms, s, c.namespace,
                                              c.workflow_id, cw.expected_run_id))
        # A write's transfer tasks (and its outbox rows) as one packed row each: every row of
        # the batch costs Paxos work, and they are read and deleted together anyway.
        if len(w.transfer_tasks) > 1:
            batch.add(ps.transfer_pack, (s, max(t.task_id for t in w.transfer_tasks),
                                         [f"{t.task_id} {t.data}" for t in w.transfer_tasks]))
        elif w.transfer_tasks:
            t = w.transfer_tasks[0]
            batch.add(ps.transfer_insert, (s, t.task_id, t.data))
        for tm in w.timer_tasks:
            batch.add(ps.timer_insert, (s, tm.fire_time_ms, tm.task_id, tm.data))
        if len(w.timer_outbox) > 1:
            batch.add(ps.outbox_pack, (s, max(tm.task_id for tm in w.timer_outbox),
                                       [f"{tm.task_id} {tm.fire_time_ms} {tm.data}" for tm in w.timer_outbox]))
        elif w.timer_outbox:
            tm = w.timer_outbox[0]
            batch.add(ps.outbox_insert, (s, tm.task_id, tm.fire_time_ms, tm.data))
        return batch

    async def commit(self, appends: Sequence[HistoryAppend], write: ShardWrite) -> None:
        """The events first (invisible until the write moves next_event_id past them), then the
        one conditional batch."""
        if appends:
            await self.append_history(appends)
        await self.write(write)

    async def read_history(self, namespace: str, workflow_id: str, run_id: str, first_event_id: int,
                           next_event_id: int, limit: int) -> list[str]:
        end = history_read_end(first_event_id, next_event_id, limit)
        if end is None:
            return []
        rows = await self._read(self._ps.events_read, (namespace, workflow_id, run_id, first_event_id, end),
                                f"reading the history of run {run_id}")
        return one_event_per_id(rows)

    async def delete_run(self, shard_id: int, range_id: int, namespace: str, workflow_id: str, run_id: str) -> None:
        """The events' partition first (idempotent, retried freely), then ONE conditional batch:
        the fence, the run row, and the current-run pointer if it names this run (conditioned on
        still naming it). A pointer that moved in between rejects the batch: RunConditionFailed,
        and the caller runs the deletion again."""
        ps = self._ps
        await self._read(ps.events_delete, (namespace, workflow_id, run_id), f"deleting the history of run {run_id}")
        current = await self._read(ps.current_get, (shard_id, namespace, workflow_id),
                                   f"reading the current run of {workflow_id!r}")
        batch = self._batch()
        batch.add(ps.fence, (range_id, shard_id, range_id))
        batch.add(ps.run_delete, (shard_id, namespace, workflow_id, run_id))
        if current and current[0][0] == run_id:
            batch.add(ps.current_delete, (shard_id, namespace, workflow_id, run_id))
        rows = await self._lwt(batch, None, f"deleting run {run_id} of {workflow_id!r}", KIND_DELETE_RUN)
        if not rows[0][0]:
            actual = _range_of(rows)
            if actual != range_id:
                raise _lost(shard_id, range_id, actual)
            raise RunConditionFailed(f"deleting run {run_id}: the current run of {namespace}/{workflow_id} changed "
                                     "meanwhile", [(namespace, workflow_id, run_id)])

    # ------------------------------------------------------------------ queues

    async def read_transfer_tasks(self, shard_id: int, after_task_id: int, limit: int) -> list[TransferTaskRow]:
        """The tasks above `after_task_id` in id order, at most `limit`. A packed row that the
        ack flush has not deleted yet (some of its tasks are above the level) also holds tasks at
        or below the level: the level (a static column, read with every row) leaves them out."""
        rows = await self._read(self._ps.transfer_read, (shard_id, after_task_id, limit),
                                f"reading the transfer tasks of shard {shard_id}")
        out: list[TransferTaskRow] = []
        for r in rows:
            if r[2] is None:
                out.append(TransferTaskRow(r[0], r[1]))
                continue
            floor = max(after_task_id, r[3] or 0)
            for tid, data in _unpack(r[2]):
                if tid > floor:
                    out.append(TransferTaskRow(tid, data))
        return out[:limit]

    async def read_timer_tasks(self, shard_id: int, after: tuple[int, int], until_fire_ms: int,
                               limit: int) -> list[TimerTaskRow]:
        if after[0] > until_fire_ms:
            return []
        rows = await self._read(self._ps.timer_read, (shard_id, after[0], after[1], until_fire_ms, limit),
                                f"reading the timers of shard {shard_id}")
        return [TimerTaskRow(r[0], r[1], r[2]) for r in rows]

    async def read_timer_outbox(self, shard_id: int, after_task_id: int, limit: int) -> list[TimerTaskRow]:
        """As read_transfer_tasks, for the outbox (a packed row's elements carry their due time)."""
        rows = await self._read(self._ps.outbox_read, (shard_id, after_task_id, limit),
                                f"reading the timer outbox of shard {shard_id}")
        out: list[TimerTaskRow] = []
        for r in rows:
            if r[3] is None:
                out.append(TimerTaskRow(int(r[0] or 0), r[1], r[2]))
                continue
            floor = max(after_task_id, r[4] or 0)
            for tid, rest in _unpack(r[3]):
                if tid > floor:
                    due, data = rest.split(" ", 1)
                    out.append(TimerTaskRow(int(due), tid, data))
        return out[:limit]


def _unpack(tasks: list[str]) -> list[tuple[int, str]]:
    """(task id, the rest) of a packed row's elements ("TASK_ID REST"), in task-id order."""
    out = []
    for text in tasks:
        tid, rest = text.split(" ", 1)
        out.append((int(tid), rest))
    out.sort(key=lambda t: t[0])
    return out


def _cut(rows: list[tuple[int, int, Any]], limit: int, max_runs: int) -> list[list[Any]]:
    """The statements of (run, size, statement) rows in order, in chunks of at most `limit` bytes
    (a row larger than the limit alone) and of at most `max_runs` runs."""
    chunks: list[list[Any]] = []
    size, runs, last = limit, max_runs, -1
    for run, n, stmt in rows:
        new_run = run != last
        if size + n > limit or (new_run and runs >= max_runs):
            chunks.append([])
            size, runs = 0, 0
        if new_run or not chunks[-1]:
            runs += 1
        chunks[-1].append(stmt)
        size += n
        last = run
    return chunks


# ---------------------------------------------------------------------- rejected writes

def _rejection(w: ShardWrite, rows: list[Row]) -> ServiceError:
    """Why Cassandra rejected `w`, from the current values it returned for the conditioned rows."""
    actual_range = _range_of(rows)
    if actual_range != w.range_id:
        return _lost(w.shard_id, w.range_id, actual_range)
    runs: dict[tuple[str, str, str], int | None] = {}
    currents: dict[tuple[str, str], str | None] = {}
    for r in rows:
        kind = getattr(r, "kind", None)
        if kind == schema.KIND_RUN:
            runs[(r.namespace, r.workflow_id, r.run_id)] = getattr(r, "next_event_id", None)
        elif kind == schema.KIND_CURRENT:
            currents[(r.namespace, r.workflow_id)] = getattr(r, "current_run_id", None)
    failed: list[tuple[str, str, str]] = []
    reasons: list[str] = []
    for rw in w.runs:
        exists = rw.key in runs
        actual = runs.get(rw.key)
        if (exists if rw.expected_next_event_id is None else actual != rw.expected_next_event_id):
            failed.append(rw.key)
            reasons.append(f"run {rw.namespace}/{rw.workflow_id}/{rw.run_id}: expected next_event_id "
                           f"{_show(rw.expected_next_event_id)}, found {_show(actual) if exists else 'none'}")
    for cw in w.current_runs:
        key = (cw.row.namespace, cw.row.workflow_id)
        exists = key in currents
        actual_run = currents.get(key)
        if (exists if cw.expected_run_id is None else actual_run != cw.expected_run_id):
            failed.append((cw.row.namespace, cw.row.workflow_id, cw.row.run_id))
            reasons.append(f"current run of {key[0]}/{key[1]}: expected {_show(cw.expected_run_id)}, found "
                           f"{_show(actual_run) if exists else 'none'}")
    if not failed:  # Cassandra said no but every returned value matches: name every row, let history reload
        failed = [rw.key for rw in w.runs]
        reasons.append("Cassandra rejected the batch although the values it returned match the expectations")
    return RunConditionFailed("conditional write rejected: " + "; ".join(reasons), failed)


def _shard_info(shard_id: int, range_id: int, owner: str, row: Row | None, now: int) -> ShardInfo:
    """The ShardInfo of a shard just taken or renewed, with the ack levels its row (read by
    shard_get) holds. The timer level counts only if the owner that held the row's range_id took
    it with a build that keeps the level (level_range = range_id): an older build, during a
    rolling upgrade, may have written timers due before the level (it does not move them up), so
    after it the timers are read from the start once."""
    if row is None:
        return ShardInfo(shard_id, range_id, owner, 0, now)
    timer = int(row.timer_ack_level or 0) if row.level_range == row.range_id else 0
    # Likewise the due-time rows a Kafka owner dropped: an older build since may have written more.
    dropped = int(row.timer_rows_dropped_before or 0) if row.outbox_range == row.range_id else 0
    return ShardInfo(shard_id, range_id, owner, int(row.transfer_ack_level or 0), now, timer_ack_level=timer,
                     timer_outbox_ack_level=int(row.timer_outbox_ack_level or 0), timer_queue=row.timer_queue or "",
                     timer_rows_dropped_before=dropped)


def _range_of(rows: list[Row]) -> int | None:
    for r in rows:
        v = getattr(r, "range_id", None)
        if v is not None:
            return int(v)
    return None


def _lost(shard_id: int, expected: int, actual: int | None) -> ShardOwnershipLost:
    return ShardOwnershipLost(
        f"shard {shard_id}: this node holds range_id {expected} but Cassandra has "
        f"{'no shard row' if actual is None else f'range_id {actual}'}; another history node owns the shard now",
        reason="ShardOwnershipLost")


# ---------------------------------------------------------------------- driver errors

def _unavailable(e: BaseException, what: str) -> ServiceError:
    if isinstance(e, ServiceError):
        return e
    return Unavailable(f"Cassandra request failed while {what}: {type(e).__name__}: {e}", reason="StoreUnavailable")


def _conditional_error(e: BaseException, what: str) -> ServiceError:
    """A conditional request failed: certainly not applied (Unavailable), or maybe applied
    (a timeout or a lost connection after it was sent: WriteOutcomeUnknown)."""
    if isinstance(e, NoHostAvailable) and e.errors:
        # A host was tried and failed (e.g. its connection dropped mid-request): the node may have
        # received the write. Only a NoHostAvailable without attempts was certainly not sent.
        pass
    elif isinstance(e, (ServiceError, *_NOT_APPLIED)):
        return _unavailable(e, what)
    kind = "timed out" if isinstance(e, OperationTimedOut) or "Timeout" in type(e).__name__ else "failed"
    return WriteOutcomeUnknown(f"Cassandra conditional write {kind} while {what}, its outcome is unknown: "
                               f"{type(e).__name__}: {e}")


def _show(v: object) -> str:
    return "none" if v is None else str(v)


def _now_ms() -> int:
    return int(time.time() * 1000)
