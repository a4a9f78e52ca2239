"""The SQLite execution store: one file (or one in-memory database), WAL mode.

Every SQLite call runs on ONE dedicated thread (a single-thread executor) with one connection, so
an in-memory database works and the connection is never shared between threads. Each store
operation is one hop to that thread and, for writes, one transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from history.store.base import (
    CurrentRunRow,
    HistoryAppend,
    RunConditionFailed,
    RunRow,
    ShardInfo,
    ShardWrite,
    TimerTaskRow,
    TransferTaskRow,
)
from legato.errors import FailedPrecondition, ShardOwnershipLost, Unavailable

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_metadata (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (
    shard_id INTEGER PRIMARY KEY,
    range_id INTEGER NOT NULL,
    owner TEXT NOT NULL,
    transfer_ack_level INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS current_runs (
    shard_id INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    start_request_id TEXT NOT NULL,
    start_time_ms INTEGER NOT NULL,
    PRIMARY KEY (shard_id, namespace, workflow_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    shard_id INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    next_event_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (shard_id, namespace, workflow_id, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transfer_tasks (
    shard_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (shard_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timer_tasks (
    shard_id INTEGER NOT NULL,
    fire_time_ms INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (shard_id, fire_time_ms, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_events (
    namespace TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    txn_id INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (namespace, workflow_id, run_id, event_id, txn_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS visibility (
    namespace TEXT NOT NULL,
    run_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    task_queue TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time_ms INTEGER NOT NULL,
    close_time_ms INTEGER NOT NULL,
    history_length INTEGER NOT NULL,
    memo TEXT NOT NULL,
    search_attributes TEXT NOT NULL,
    PRIMARY KEY (namespace, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS visibility_by_start ON visibility (namespace, start_time_ms DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS visibility_by_type ON visibility
    (namespace, workflow_type, start_time_ms DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS visibility_by_status ON visibility
    (namespace, status, start_time_ms DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS visibility_by_workflow_id ON visibility
    (namespace, workflow_id, start_time_ms DESC, run_id DESC);
"""


class SqliteStore:
    """`history.store.base.ExecutionStore` on SQLite. `path` None: an in-memory database."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="legato-sqlite")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _open(self) -> None:
        where = self.path or ":memory:"
        try:
            conn = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise Unavailable(f"cannot open the SQLite database {where}: {e}") from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            conn.close()
            raise Unavailable(f"cannot open the SQLite database {where}: {e}") from e
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT value FROM cluster_metadata WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO cluster_metadata (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"the SQLite database {where} has schema version {row[0]}; this build of Legato uses "
                    f"version {SCHEMA_VERSION} (upgrade the schema with the legato schema command)",
                    reason="SchemaVersionMismatch")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise Unavailable("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as e:
            raise Unavailable(f"SQLite error in {getattr(fn, '__name__', 'store call')}: {e}",
                              reason="StoreError") from e

    async def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn(connection)` on the database thread (one hop). For the visibility store."""
        return await self._run(self._with_conn, fn)

    def _with_conn(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._c()
        try:
            return fn(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise Unavailable("the SQLite store is not open")
        return self._conn

    # ------------------------------------------------------------------ cluster

    async def init_cluster(self, num_shards: int) -> int:
        return await self._run(self._init_cluster, num_shards)

    def _init_cluster(self, num_shards: int) -> int:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT value FROM cluster_metadata WHERE key = 'num_shards'").fetchone()
            if row is None:
                c.execute("INSERT INTO cluster_metadata (key, value) VALUES ('num_shards', ?)", (str(num_shards),))
                stored = num_shards
            else:
                stored = int(row[0])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return stored

    # ------------------------------------------------------------------ shards

    async def acquire_shard(self, shard_id: int, owner: str) -> ShardInfo:
        return await self._run(self._acquire_shard, shard_id, owner)

    def _acquire_shard(self, shard_id: int, owner: str) -> ShardInfo:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT range_id, transfer_ack_level FROM shards WHERE shard_id = ?",
                            (shard_id,)).fetchone()
            if row is None:
                info = ShardInfo(shard_id, 1, owner, 0)
                c.execute("INSERT INTO shards (shard_id, range_id, owner, transfer_ack_level) VALUES (?, ?, ?, 0)",
                          (shard_id, 1, owner))
            else:
                info = ShardInfo(shard_id, int(row[0]) + 1, owner, int(row[1]))
                cur = c.execute("UPDATE shards SET range_id = ?, owner = ? WHERE shard_id = ? AND range_id = ?",
                                (info.range_id, owner, shard_id, int(row[0])))
                if cur.rowcount != 1:  # cannot happen inside one IMMEDIATE transaction; kept for clarity
                    raise ShardOwnershipLost(f"shard {shard_id}: lost the race to acquire it")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return info

    async def renew_range(self, shard_id: int, expected_range_id: int, owner: str) -> ShardInfo:
        return await self._run(self._renew_range, shard_id, expected_range_id, owner)

    def _renew_range(self, shard_id: int, expected_range_id: int, owner: str) -> ShardInfo:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT range_id, transfer_ack_level FROM shards WHERE shard_id = ?",
                            (shard_id,)).fetchone()
            if row is None or int(row[0]) != expected_range_id:
                raise _lost(shard_id, expected_range_id, None if row is None else int(row[0]))
            c.execute("UPDATE shards SET range_id = ?, owner = ? WHERE shard_id = ?",
                      (expected_range_id + 1, owner, shard_id))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return ShardInfo(shard_id, expected_range_id + 1, owner, int(row[1]))

    async def update_shard(self, shard_id: int, range_id: int, transfer_ack_level: int,
                           timer_deletes: Sequence[tuple[int, int]]) -> None:
        await self._run(self._update_shard, shard_id, range_id, transfer_ack_level, list(timer_deletes))

    def _update_shard(self, shard_id: int, range_id: int, ack: int, timer_deletes: list[tuple[int, int]]) -> None:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            self._check_range(c, shard_id, range_id)
            c.execute("UPDATE shards SET transfer_ack_level = MAX(transfer_ack_level, ?) WHERE shard_id = ?",
                      (ack, shard_id))
            c.execute("DELETE FROM transfer_tasks WHERE shard_id = ? AND task_id <= ?", (shard_id, ack))
            if timer_deletes:
                c.executemany("DELETE FROM timer_tasks WHERE shard_id = ? AND fire_time_ms = ? AND task_id = ?",
                              [(shard_id, f, t) for f, t in timer_deletes])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    @staticmethod
    def _check_range(c: sqlite3.Connection, shard_id: int, range_id: int) -> None:
        row = c.execute("SELECT range_id FROM shards WHERE shard_id = ?", (shard_id,)).fetchone()
        if row is None or int(row[0]) != range_id:
            raise _lost(shard_id, range_id, None if row is None else int(row[0]))

    # ------------------------------------------------------------------ runs

    async def get_current_run(self, shard_id: int, namespace: str, workflow_id: str) -> CurrentRunRow | None:
        return await self._run(self._get_current_run, shard_id, namespace, workflow_id)

    def _get_current_run(self, shard_id: int, namespace: str, workflow_id: str) -> CurrentRunRow | None:
        row = self._c().execute(
            "SELECT run_id, status, start_request_id, start_time_ms FROM current_runs "
            "WHERE shard_id = ? AND namespace = ? AND workflow_id = ?", (shard_id, namespace, workflow_id)).fetchone()
        if row is None:
            return None
        return CurrentRunRow(namespace, workflow_id, row[0], row[1], row[2], int(row[3]))

    async def get_run(self, shard_id: int, namespace: str, workflow_id: str, run_id: str) -> RunRow | None:
        return await self._run(self._get_run, shard_id, namespace, workflow_id, run_id)

    def _get_run(self, shard_id: int, namespace: str, workflow_id: str, run_id: str) -> RunRow | None:
        row = self._c().execute(
            "SELECT next_event_id, state FROM runs WHERE shard_id = ? AND namespace = ? AND workflow_id = ? "
            "AND run_id = ?", (shard_id, namespace, workflow_id, run_id)).fetchone()
        if row is None:
            return None
        return RunRow(namespace, workflow_id, run_id, int(row[0]), row[1])

    async def append_history(self, appends: Sequence[HistoryAppend]) -> None:
        await self._run(self._append_only, list(appends))

    def _append_only(self, appends: list[HistoryAppend]) -> None:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            self._append(c, appends)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    @staticmethod
    def _append(c: sqlite3.Connection, appends: list[HistoryAppend]) -> None:
        rows = [(a.namespace, a.workflow_id, a.run_id, eid, a.txn_id, data)
                for a in appends for eid, data in a.events]
        if rows:
            c.executemany("INSERT OR REPLACE INTO history_events "
                          "(namespace, workflow_id, run_id, event_id, txn_id, data) VALUES (?, ?, ?, ?, ?, ?)", rows)

    async def write(self, write: ShardWrite) -> None:
        await self._run(self._commit, [], write)

    async def commit(self, appends: Sequence[HistoryAppend], write: ShardWrite) -> None:
        await self._run(self._commit, list(appends), write)

    def _commit(self, appends: list[HistoryAppend], w: ShardWrite) -> None:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            # One transaction covers both steps here, so the conditions are checked first and a
            # rejected write leaves nothing behind, not even invisible events. (A backend that must
            # append events separately, as Cassandra does, relies on the next_event_id bound and on
            # the greatest txn_id winning; append_history + write exercise that path.)
            failure = self._check(c, w)
            if failure is not None:
                raise failure
            self._append(c, appends)
            self._apply(c, w)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def _check(self, c: sqlite3.Connection, w: ShardWrite) -> Exception | None:
        row = c.execute("SELECT range_id FROM shards WHERE shard_id = ?", (w.shard_id,)).fetchone()
        if row is None or int(row[0]) != w.range_id:
            return _lost(w.shard_id, w.range_id, None if row is None else int(row[0]))
        failed: list[tuple[str, str, str]] = []
        reasons: list[str] = []
        for r in w.runs:
            got = c.execute("SELECT next_event_id FROM runs WHERE shard_id = ? AND namespace = ? AND workflow_id = ? "
                            "AND run_id = ?", (w.shard_id, r.namespace, r.workflow_id, r.run_id)).fetchone()
            actual = None if got is None else int(got[0])
            if actual != r.expected_next_event_id:
                failed.append(r.key)
                reasons.append(f"run {r.namespace}/{r.workflow_id}/{r.run_id}: expected next_event_id "
                               f"{_show(r.expected_next_event_id)}, found {_show(actual)}")
        for cw in w.current_runs:
            got = c.execute("SELECT run_id FROM current_runs WHERE shard_id = ? AND namespace = ? AND workflow_id = ?",
                            (w.shard_id, cw.row.namespace, cw.row.workflow_id)).fetchone()
            actual_run = None if got is None else str(got[0])
            if actual_run != cw.expected_run_id:
                failed.append((cw.row.namespace, cw.row.workflow_id, cw.row.run_id))
                reasons.append(f"current run of {cw.row.namespace}/{cw.row.workflow_id}: expected "
                               f"{_show(cw.expected_run_id)}, found {_show(actual_run)}")
        if failed:
            return RunConditionFailed("conditional write rejected: " + "; ".join(reasons), failed)
        return None

    @staticmethod
    def _apply(c: sqlite3.Connection, w: ShardWrite) -> None:
        s = w.shard_id
        if w.runs:
            c.executemany("INSERT OR REPLACE INTO runs (shard_id, namespace, workflow_id, run_id, next_event_id, "
                          "state) VALUES (?, ?, ?, ?, ?, ?)",
                          [(s, r.namespace, r.workflow_id, r.run_id, r.next_event_id, r.state) for r in w.runs])
        if w.current_runs:
            c.executemany("INSERT OR REPLACE INTO current_runs (shard_id, namespace, workflow_id, run_id, status, "
                          "start_request_id, start_time_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                          [(s, x.row.namespace, x.row.workflow_id, x.row.run_id, x.row.status,
                            x.row.start_request_id, x.row.start_time_ms) for x in w.current_runs])
        if w.transfer_tasks:
            c.executemany("INSERT INTO transfer_tasks (shard_id, task_id, data) VALUES (?, ?, ?)",
                          [(s, t.task_id, t.data) for t in w.transfer_tasks])
        if w.timer_tasks:
            c.executemany("INSERT INTO timer_tasks (shard_id, fire_time_ms, task_id, data) VALUES (?, ?, ?, ?)",
                          [(s, t.fire_time_ms, t.task_id, t.data) for t in w.timer_tasks])

    async def read_history(self, namespace: str, workflow_id: str, run_id: str, first_event_id: int,
                           next_event_id: int, limit: int) -> list[str]:
        if limit <= 0 or first_event_id >= next_event_id:
            return []
        return await self._run(self._read_history, namespace, workflow_id, run_id, first_event_id,
                               next_event_id, limit)

    def _read_history(self, namespace: str, workflow_id: str, run_id: str, first: int, end: int,
                      limit: int) -> list[str]:
        rows = self._c().execute(
            "SELECT event_id, data FROM history_events WHERE namespace = ? AND workflow_id = ? AND run_id = ? "
            "AND event_id >= ? AND event_id < ? ORDER BY event_id ASC, txn_id DESC",
            (namespace, workflow_id, run_id, first, min(end, first + limit))).fetchall()
        out: list[str] = []
        last = -1
        for eid, data in rows:
            if eid != last:  # the greatest txn_id of each event id comes first
                out.append(data)
                last = eid
        return out

    # ------------------------------------------------------------------ queues

    async def read_transfer_tasks(self, shard_id: int, after_task_id: int, limit: int) -> list[TransferTaskRow]:
        return await self._run(self._read_transfer, shard_id, after_task_id, limit)

    def _read_transfer(self, shard_id: int, after: int, limit: int) -> list[TransferTaskRow]:
        rows = self._c().execute("SELECT task_id, data FROM transfer_tasks WHERE shard_id = ? AND task_id > ? "
                                 "ORDER BY task_id LIMIT ?", (shard_id, after, limit)).fetchall()
        return [TransferTaskRow(int(r[0]), r[1]) for r in rows]

    async def read_timer_tasks(self, shard_id: int, after: tuple[int, int], until_fire_ms: int,
                               limit: int) -> list[TimerTaskRow]:
        return await self._run(self._read_timers, shard_id, after, until_fire_ms, limit)

    def _read_timers(self, shard_id: int, after: tuple[int, int], until: int, limit: int) -> list[TimerTaskRow]:
        rows = self._c().execute(
            "SELECT fire_time_ms, task_id, data FROM timer_tasks WHERE shard_id = ? "
            "AND (fire_time_ms > ? OR (fire_time_ms = ? AND task_id > ?)) AND fire_time_ms <= ? "
            "ORDER BY fire_time_ms, task_id LIMIT ?",
            (shard_id, after[0], after[0], after[1], until, limit)).fetchall()
        return [TimerTaskRow(int(r[0]), int(r[1]), r[2]) for r in rows]


def _show(v: object) -> str:
    return "none" if v is None else str(v)


def _lost(shard_id: int, expected: int, actual: int | None) -> ShardOwnershipLost:
    return ShardOwnershipLost(
        f"shard {shard_id}: this node holds range_id {expected} but the store has "
        f"{'no shard row' if actual is None else f'range_id {actual}'}; another history node owns the shard now",
        reason="ShardOwnershipLost")
