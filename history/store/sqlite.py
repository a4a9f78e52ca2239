"""The SQLite execution store: one file (or one in-memory database), WAL mode.

Every SQLite call runs on the event loop's thread with one connection, so an in-memory database
works and the connection is never shared between threads. The calls are short (point reads, and
one transaction for a group of commits); handing each to a database thread cost more than the call
itself: every hop traded the GIL back and forth with the busy event loop, and the database thread
waited for the GIL more than it worked. Commits that arrive while others are being written are
written together, in one transaction (see `commit`).

The one exception is `read_apart`, for reads whose cost grows with the store (visibility's lists
and counts): they run on a read-only connection of their own in a thread of their own, so that a
count over a million runs does not stall every workflow of the process (WAL lets it read the last
committed state beside the writer; SQLite releases the GIL while it steps).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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
    check_timer_queue,
    history_read_end,
    one_event_per_id,
)
from history.store.metered import metered
from legato import metrics
from legato.errors import FailedPrecondition, ShardOwnershipLost, Unavailable

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
WAL_CHECKPOINT_PAGES = 4000
PAGE_CACHE_KIB = 65_536  # the connection's page cache, in KiB (SQLite: a negative cache_size)
READER_CACHE_KIB = 16_384  # the page cache of `read_apart`'s connection, in KiB
MAX_GROUP_WRITES = 256  # shard writes carried out in one transaction, at most
_IN_CHUNK = 200  # runs looked up by one statement (4 parameters each; SQLite allows 32766)

_T = TypeVar("_T")
# What a group transaction carries out for each caller: its history appends and conditional write.
_GroupItem = tuple[list[HistoryAppend], ShardWrite]

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
    updated_ms INTEGER NOT NULL DEFAULT 0,
    timer_ack_level INTEGER NOT NULL DEFAULT 0,
    timer_outbox_ack_level INTEGER NOT NULL DEFAULT 0,
    timer_queue TEXT NOT NULL DEFAULT '',
    timer_rows_dropped_before INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS timer_outbox (
    shard_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    fire_time_ms INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (shard_id, task_id)
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
-- Search attributes, one row per indexed value (kind: s text, n number, b boolean as 0/1), so that
-- queries on them use an index. Written with the visibility row (history/visibility.py).
-- (No semicolons in these comments: the schema is split on them.)
CREATE TABLE IF NOT EXISTS visibility_search_attributes (
    namespace TEXT NOT NULL,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    value NOT NULL,
    PRIMARY KEY (namespace, run_id, name, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS visibility_search_attributes_by_value ON visibility_search_attributes
    (namespace, name, kind, value, run_id);
"""


@metered("sqlite")
class SqliteStore:
    """`history.store.base.ExecutionStore` on SQLite. `path` None: an in-memory database."""

    def __init__(self, path: str | None, commit_window_ms: float = 0.0) -> None:
        """`commit_window_ms`: while writes arrive together (the last transaction carried more
        than one), a transaction waits this long for more to join it; a lone write goes at once."""
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._commits: list[tuple[_GroupItem, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._window_s = max(0.0, commit_window_ms) / 1000.0
        self._last_group = 0  # items in the last group transaction
        self._reader: ThreadPoolExecutor | None = None  # read_apart's thread, and its connection:
        self._reader_conn: sqlite3.Connection | None = None  # opened and used on that thread only

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._conn is not None:
            return
        try:
            self._open()
        except sqlite3.Error as e:
            raise Unavailable(f"SQLite error in _open: {e}", reason="StoreError") from e

    async def close(self) -> None:
        if self._conn is None:
            return
        if self._committer is not None:  # the writes already queued go first
            await asyncio.gather(self._committer, return_exceptions=True)
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await asyncio.get_running_loop().run_in_executor(reader, self._close_reader)
            reader.shutdown(wait=False)
        self._close()

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
            # Checkpoint (copy the WAL into the database file, then sync it) every ~16 MB of WAL
            # instead of SQLite's 4 MB: a page rewritten by many commits is copied once.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            # A page cache that holds the hot pages of the indexes the engine writes (SQLite's
            # default, 2 MB, re-reads them from the OS on every commit once the file outgrows it).
            conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            conn.close()
            raise Unavailable(f"cannot open the SQLite database {where}: {e}") from e
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            _add_missing_columns(conn)
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
        if self._conn is None:
            raise Unavailable("the SQLite store is not open")
        try:
            return fn(*args)
        except sqlite3.Error as e:
            raise Unavailable(f"SQLite error in {getattr(fn, '__name__', 'store call')}: {e}",
                              reason="StoreError") from e

    async def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn(connection)` (on the event loop's thread, like every call). For the visibility store."""
        return await self._run(self._with_conn, fn)

    async def read_apart(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read-only `fn(connection)` on `read_apart`'s own connection and thread (see the
        module's docstring); it sees what was committed when it starts. An in-memory database has
        no second connection: there it runs like `call`."""
        if self.path is None:
            return await self.call(fn)
        if self._conn is None:
            raise Unavailable("the SQLite store is not open")
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        # A caller that goes away leaves its read to finish on the thread (interrupting the
        # connection could end another caller's read queued behind it).
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, self._read_apart, fn)
        except sqlite3.Error as e:
            raise Unavailable(f"SQLite error in {getattr(fn, '__name__', 'read')}: {e}", reason="StoreError") from e

    def _read_apart(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._reader_conn is None:
            conn = sqlite3.connect(self.path or ":memory:", isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
            self._reader_conn = conn
        return fn(self._reader_conn)

    def _close_reader(self) -> None:
        if self._reader_conn is not None:
            self._reader_conn.close()
            self._reader_conn = None

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

    async def acquire_shard(self, shard_id: int, owner: str, timer_queue: str = TIMER_QUEUE_STORE) -> ShardInfo:
        return await self._run(self._acquire_shard, shard_id, owner, timer_queue)

    def _acquire_shard(self, shard_id: int, owner: str, timer_queue: str) -> ShardInfo:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(f"SELECT {_SHARD_COLUMNS} FROM shards WHERE shard_id = ?", (shard_id,)).fetchone()
            if row is None:
                info = ShardInfo(shard_id, 1, owner, 0)
                c.execute("INSERT INTO shards (shard_id, range_id, owner, transfer_ack_level, timer_queue) "
                          "VALUES (?, ?, ?, 0, ?)", (shard_id, 1, owner, timer_queue))
            else:
                check_timer_queue(shard_id, row[4], timer_queue)
                info = _shard_info(shard_id, int(row[0]) + 1, owner, row)
                cur = c.execute("UPDATE shards SET range_id = ?, owner = ?, timer_queue = ? WHERE shard_id = ? "
                                "AND range_id = ?", (info.range_id, owner, timer_queue, shard_id, int(row[0])))
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
            row = c.execute(f"SELECT {_SHARD_COLUMNS} FROM shards WHERE shard_id = ?", (shard_id,)).fetchone()
            if row is not None and int(row[0]) == expected_range_id + 1 and row[5] == owner:
                c.execute("COMMIT")  # this owner's renewal already took effect (see base.py)
                return _shard_info(shard_id, expected_range_id + 1, owner, row)
            if row is None or int(row[0]) != expected_range_id:
                raise _lost(shard_id, expected_range_id, None if row is None else int(row[0]))
            c.execute("UPDATE shards SET range_id = ?, owner = ? WHERE shard_id = ?",
                      (expected_range_id + 1, owner, shard_id))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return _shard_info(shard_id, expected_range_id + 1, owner, row)

    async def update_shard(self, shard_id: int, range_id: int, transfer_ack_level: int,
                           timer_deletes: Sequence[tuple[int, int]], timer_ack_level: int = 0,
                           outbox_ack_level: int = 0, drop_timers_before: int = 0) -> None:
        await self._run(self._update_shard, shard_id, range_id, transfer_ack_level, list(timer_deletes),
                        timer_ack_level, outbox_ack_level, drop_timers_before)

    def _update_shard(self, shard_id: int, range_id: int, ack: int, timer_deletes: list[tuple[int, int]],
                      timer_ack: int, outbox_ack: int, drop_before: int) -> None:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            self._check_range(c, shard_id, range_id)
            c.execute("UPDATE shards SET transfer_ack_level = MAX(transfer_ack_level, ?), "
                      "timer_ack_level = MAX(timer_ack_level, ?) WHERE shard_id = ?", (ack, timer_ack, shard_id))
            c.execute("DELETE FROM transfer_tasks WHERE shard_id = ? AND task_id <= ?", (shard_id, ack))
            if timer_ack > 0:
                c.execute("DELETE FROM timer_tasks WHERE shard_id = ? AND fire_time_ms < ?", (shard_id, timer_ack))
            if drop_before > 0:
                c.execute("DELETE FROM timer_tasks WHERE shard_id = ? AND fire_time_ms < ?", (shard_id, drop_before))
                # Set, not raised: an owner after a build that dropped every row (EVERY_TIMER_ROW)
                # records where its own scans start again (as on Cassandra).
                c.execute("UPDATE shards SET timer_rows_dropped_before = ? WHERE shard_id = ?", (drop_before, shard_id))
            if outbox_ack > 0:
                c.execute("UPDATE shards SET timer_outbox_ack_level = MAX(timer_outbox_ack_level, ?) "
                          "WHERE shard_id = ?", (outbox_ack, shard_id))
                c.execute("DELETE FROM timer_outbox WHERE shard_id = ? AND task_id <= ?", (shard_id, outbox_ack))
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

    async def scan_runs(self, shard_id: int, after: tuple[str, str, str] | None, limit: int) -> list[RunRow]:
        return await self._run(self._scan_runs, shard_id, after, limit)

    def _scan_runs(self, shard_id: int, after: tuple[str, str, str] | None, limit: int) -> list[RunRow]:
        start = after or ("", "", "")
        op = ">" if after else ">="
        rows = self._c().execute(
            f"SELECT namespace, workflow_id, run_id, next_event_id, state FROM runs WHERE shard_id = ? AND "
            f"(namespace, workflow_id, run_id) {op} (?, ?, ?) ORDER BY namespace, workflow_id, run_id LIMIT ?",
            (shard_id, *start, limit)).fetchall()
        return [RunRow(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

    async def get_metadata(self, key: str) -> str | None:
        return await self._run(self._get_metadata, key)

    def _get_metadata(self, key: str) -> str | None:
        row = self._c().execute("SELECT value FROM cluster_metadata WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    async def put_metadata(self, key: str, value: str) -> None:
        await self._run(self._put_metadata, key, value)

    def _put_metadata(self, key: str, value: str) -> None:
        self._c().execute("INSERT OR REPLACE INTO cluster_metadata (key, value) VALUES (?, ?)", (key, value))

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
        await self.commit([], write)

    async def commit(self, appends: Sequence[HistoryAppend], write: ShardWrite) -> None:
        """One atomic conditional write. Writes that are waiting when the committer task runs are
        carried out together in ONE transaction (each still all-or-nothing, each checked against
        what the ones before it wrote), and each caller returns once that transaction is
        committed: many shards' commits cost one COMMIT. While writes keep arriving together, the
        committer first waits `commit_window_ms` for more."""
        if self._conn is None:
            raise Unavailable("the SQLite store is not open")
        await self._enqueue((list(appends), write))

    async def _enqueue(self, item: _GroupItem) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commits.append((item, fut))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._drain_commits(), name="sqlite-commit")
        await fut

    async def _drain_commits(self) -> None:
        while self._commits:
            if self._window_s and self._last_group > 1 and len(self._commits) < MAX_GROUP_WRITES:
                # Writes are arriving together: let more of them share this transaction. Under
                # load this makes fewer, larger transactions and answers in bursts (fewer wake-ups
                # everywhere); a lone write after a quiet spell is not delayed.
                await asyncio.sleep(self._window_s)
            batch, self._commits = self._commits[:MAX_GROUP_WRITES], self._commits[MAX_GROUP_WRITES:]
            self._last_group = len(batch)
            try:
                results = await self._run(self._commit_group, [item for item, _ in batch])
            except BaseException as e:
                err = e if isinstance(e, Exception) else Unavailable("the SQLite store is closing", reason="StoreError")
                for _, fut in batch:
                    _fail(fut, err)
                if not isinstance(e, Exception):
                    raise
                continue
            metrics.sqlite_commits.inc()
            metrics.sqlite_commit_size.observe(len(batch))
            for (_, fut), failure in zip(batch, results, strict=True):
                if failure is None:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    _fail(fut, failure)

    def _commit_group(self, items: list[_GroupItem]) -> list[Exception | None]:
        """Carry out every write in one transaction; the result of each (None: written)."""
        if len(items) == 1:
            return [self._commit_alone(items[0])]
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            results = self._group(c, items)
            c.execute("COMMIT")
        except sqlite3.Error:
            # Something no condition foresaw (a constraint): do each write alone, so that only the
            # one at fault fails.
            if c.in_transaction:
                c.execute("ROLLBACK")
            return [self._commit_alone(item) for item in items]
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return results

    def _group(self, c: sqlite3.Connection, items: list[_GroupItem]) -> list[Exception | None]:
        """Inside a transaction, in order: check each write and carry it out if its conditions
        hold (so a write's conditions see what the writes before it wrote)."""
        ranges = dict(c.execute("SELECT shard_id, range_id FROM shards").fetchall())
        results: list[Exception | None] = []
        for appends, w in items:
            failure = self._check(c, w, ranges)
            if failure is None:
                self._append(c, appends)
                self._apply(c, w)
            results.append(failure)
        return results

    def _commit_alone(self, item: _GroupItem) -> Exception | None:
        try:
            self._commit(*item)
        except RunConditionFailed as e:
            return e
        except ShardOwnershipLost as e:
            return e
        except sqlite3.Error as e:
            return Unavailable(f"SQLite error in commit: {e}", reason="StoreError")
        return None

    def _commit(self, appends: list[HistoryAppend], w: ShardWrite) -> None:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            # One transaction covers both steps here, so the conditions are checked first and a
            # rejected write leaves nothing behind, not even invisible events. (A backend that must
            # append events separately, as Cassandra does, relies on the next_event_id bound and on
            # the greatest txn_id winning; append_history + write exercise that path.)
            failure = self._check(c, w, None)
            if failure is not None:
                raise failure
            self._append(c, appends)
            self._apply(c, w)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def _check(self, c: sqlite3.Connection, w: ShardWrite, ranges: dict[int, int] | None) -> Exception | None:
        """Why `w` may not be written (its shard's range_id or a run's condition), or None.
        `ranges`: the shards' range ids, when they were read already for several writes."""
        if ranges is None:
            row = c.execute("SELECT range_id FROM shards WHERE shard_id = ?", (w.shard_id,)).fetchone()
            actual_range = None if row is None else int(row[0])
        else:
            actual_range = ranges.get(w.shard_id)
        if actual_range != w.range_id:
            return _lost(w.shard_id, w.range_id, actual_range)
        failed: list[tuple[str, str, str]] = []
        reasons: list[str] = []
        if w.runs:
            found = self._stored_next_event_ids(c, [(w.shard_id, *r.key) for r in w.runs])
            for r in w.runs:
                actual = found.get((w.shard_id, *r.key))
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
    def _stored_next_event_ids(c: sqlite3.Connection, keys: list[tuple[int, str, str, str]]
                               ) -> dict[tuple[int, str, str, str], int]:
        """The stored next_event_id of each (shard_id, namespace, workflow_id, run_id) that exists."""
        if len(keys) == 1:
            row = c.execute("SELECT next_event_id FROM runs WHERE shard_id = ? AND namespace = ? AND workflow_id = ? "
                            "AND run_id = ?", keys[0]).fetchone()
            return {} if row is None else {keys[0]: int(row[0])}
        found: dict[tuple[int, str, str, str], int] = {}
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = keys[i:i + _IN_CHUNK]
            # A join with the keys as a table: a primary-key lookup per key (a row-value IN would scan).
            rows = c.execute(
                "WITH k(s, n, w, r) AS (VALUES " + ", ".join(["(?, ?, ?, ?)"] * len(chunk)) + ") "
                "SELECT k.s, k.n, k.w, k.r, runs.next_event_id FROM k JOIN runs ON runs.shard_id = k.s AND "
                "runs.namespace = k.n AND runs.workflow_id = k.w AND runs.run_id = k.r",
                [x for key in chunk for x in key]).fetchall()
            for s, ns, wf, run, nxt in rows:
                found[(int(s), ns, wf, run)] = int(nxt)
        return found

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
        if w.timer_outbox:
            c.executemany("INSERT INTO timer_outbox (shard_id, task_id, fire_time_ms, data) VALUES (?, ?, ?, ?)",
                          [(s, t.task_id, t.fire_time_ms, t.data) for t in w.timer_outbox])

    async def read_history(self, namespace: str, workflow_id: str, run_id: str, first_event_id: int,
                           next_event_id: int, limit: int) -> list[str]:
        end = history_read_end(first_event_id, next_event_id, limit)
        if end is None:
            return []
        return await self._run(self._read_history, namespace, workflow_id, run_id, first_event_id, end)

    def _read_history(self, namespace: str, workflow_id: str, run_id: str, first: int, end: int) -> list[str]:
        rows = self._c().execute(
            "SELECT event_id, data FROM history_events WHERE namespace = ? AND workflow_id = ? AND run_id = ? "
            "AND event_id >= ? AND event_id < ? ORDER BY event_id ASC, txn_id DESC",
            (namespace, workflow_id, run_id, first, end)).fetchall()
        return one_event_per_id(rows)

    async def delete_run(self, shard_id: int, range_id: int, namespace: str, workflow_id: str, run_id: str) -> None:
        await self._run(self._delete_run, shard_id, range_id, namespace, workflow_id, run_id)

    def _delete_run(self, shard_id: int, range_id: int, namespace: str, workflow_id: str, run_id: str) -> None:
        """One transaction: nothing is deleted unless the range_id holds. The freed pages are
        reused by later writes (the file does not shrink: no VACUUM)."""
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            self._check_range(c, shard_id, range_id)
            c.execute("DELETE FROM history_events WHERE namespace = ? AND workflow_id = ? AND run_id = ?",
                      (namespace, workflow_id, run_id))
            c.execute("DELETE FROM runs WHERE shard_id = ? AND namespace = ? AND workflow_id = ? AND run_id = ?",
                      (shard_id, namespace, workflow_id, run_id))
            c.execute("DELETE FROM current_runs WHERE shard_id = ? AND namespace = ? AND workflow_id = ? "
                      "AND run_id = ?", (shard_id, namespace, workflow_id, run_id))
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

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

    async def read_timer_outbox(self, shard_id: int, after_task_id: int, limit: int) -> list[TimerTaskRow]:
        return await self._run(self._read_outbox, shard_id, after_task_id, limit)

    def _read_outbox(self, shard_id: int, after: int, limit: int) -> list[TimerTaskRow]:
        rows = self._c().execute("SELECT fire_time_ms, task_id, data FROM timer_outbox WHERE shard_id = ? "
                                 "AND task_id > ? ORDER BY task_id LIMIT ?", (shard_id, after, limit)).fetchall()
        return [TimerTaskRow(int(r[0]), int(r[1]), r[2]) for r in rows]


# What the shard row reads: range_id, transfer_ack_level, timer_ack_level, timer_outbox_ack_level,
# timer_queue, owner, timer_rows_dropped_before (see _shard_info).
_SHARD_COLUMNS = ("range_id, transfer_ack_level, timer_ack_level, timer_outbox_ack_level, timer_queue, owner, "
                  "timer_rows_dropped_before")


def _shard_info(shard_id: int, range_id: int, owner: str, row: tuple[Any, ...]) -> ShardInfo:
    return ShardInfo(shard_id, range_id, owner, int(row[1]), timer_ack_level=int(row[2]),
                     timer_outbox_ack_level=int(row[3]), timer_queue=str(row[4]),
                     timer_rows_dropped_before=int(row[6]))


# Columns added to existing tables after version 1, with their definitions. Adding a column with a
# default is all a newer build needs from an older database, and an older build reading a newer
# database ignores the column (its timer scan merely starts at the beginning), so these do not
# bump SCHEMA_VERSION.
_ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "shards": [("timer_ack_level", "INTEGER NOT NULL DEFAULT 0"),
               ("timer_outbox_ack_level", "INTEGER NOT NULL DEFAULT 0"),
               ("timer_queue", "TEXT NOT NULL DEFAULT ''"),
               ("timer_rows_dropped_before", "INTEGER NOT NULL DEFAULT 0")],
}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Add the columns of `_ADDED_COLUMNS` a database made by an older build lacks (idempotent)."""
    for table, columns in _ADDED_COLUMNS.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for name, definition in columns:
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")


def _fail(fut: asyncio.Future[None], err: BaseException) -> None:
    if not fut.done():
        fut.set_exception(err)
        fut.exception()  # the caller may be gone: don't log "exception was never retrieved"


def _show(v: object) -> str:
    return "none" if v is None else str(v)


def _lost(shard_id: int, expected: int, actual: int | None) -> ShardOwnershipLost:
    return ShardOwnershipLost(
        f"shard {shard_id}: this node holds range_id {expected} but the store has "
        f"{'no shard row' if actual is None else f'range_id {actual}'}; another history node owns the shard now",
        reason="ShardOwnershipLost")
