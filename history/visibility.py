"""Visibility on SQLite: one row per run, queried with the language of `legato.query`.

Tables (in the SqliteStore's file, see history/store/sqlite.py):

* `visibility`: one row per run (namespace, run id, workflow id, type, task queue, status, start
  and close time, history length, memo and search attributes as JSON), indexed by start time
  alone and by type, status and workflow id, each followed by start time.
* `visibility_search_attributes`: one row per indexed search attribute value of a run
  (name, kind, value; see `legato.lq.index_values`), indexed by (namespace, name, kind, value),
  so that a comparison on a search attribute is an index range, not a scan of JSON. Written in
  the same transaction as the run's row; filled once from the JSON column for databases written
  before it existed.

A query's AST compiles to one parameterised SQL condition: system fields are columns, a
search-attribute comparison is `run_id IN (SELECT run_id FROM visibility_search_attributes WHERE
name = ? AND kind = ? AND value op ?)`, and AND/OR/NOT map to themselves (no NULL can arise, so
SQL's logic is the two-valued logic of `legato.query.matches`).

Listing is keyset-paged: newest first by (start time, run id), and the opaque page token holds
the last row's (start time, run id) and a fingerprint of the query. A run added between two pages
neither shifts nor repeats rows: a newer one sorts before the token, an older one is where it
belongs.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from typing import Any

from history.store.sqlite import SqliteStore
from history.visibility_common import (
    check_namespace,
    decode_token,
    encode_token,
    info_from_columns,
    page_size,
    parse_list_query,
)
from legato import codec
from legato import query as lq
from legato.api import ListWorkflowsRequest, ListWorkflowsResponse, WorkflowExecutionInfo, WorkflowStatus
from legato.errors import Unavailable
from legato.query import And, Compare, Expr, Field, Not, Op, Or, SystemField

_INDEX_KEY = "visibility_search_index"  # cluster_metadata: the side table has every run's values

_COLUMNS = {
    SystemField.WORKFLOW_ID: "workflow_id", SystemField.WORKFLOW_TYPE: "workflow_type", SystemField.RUN_ID: "run_id",
    SystemField.EXECUTION_STATUS: "status", SystemField.TASK_QUEUE: "task_queue",
    SystemField.START_TIME: "start_time_ms", SystemField.CLOSE_TIME: "close_time_ms",
}
_SA_MATCH = ("run_id IN (SELECT run_id FROM visibility_search_attributes "
             "WHERE namespace = ? AND name = ? AND kind = ? AND value {test})")


def compile_where(e: Expr | None, namespace: str) -> tuple[str, list[object]]:
    """The SQL condition on `visibility` rows of `namespace` for an expression, and its parameters."""
    args: list[object] = [namespace]
    if e is None:
        return "namespace = ?", args
    return f"namespace = ? AND {_sql(e, namespace, args)}", args


def _sql(e: Expr, namespace: str, args: list[object]) -> str:
    if isinstance(e, And):
        return "(" + " AND ".join(_sql(i, namespace, args) for i in e.items) + ")"
    if isinstance(e, Or):
        return "(" + " OR ".join(_or_items(e, namespace, args)) + ")"
    if isinstance(e, Not):
        return f"NOT {_sql(e.item, namespace, args)}"
    return _compare([e], namespace, args)


def _or_items(e: Or, namespace: str, args: list[object]) -> list[str]:
    """The terms of an OR; equalities on one field (what `x IN (...)` expands to) become one IN."""
    order: list[tuple[Field, str] | Expr] = []
    groups: dict[tuple[Field, str], list[Compare]] = {}
    for i in e.items:
        if isinstance(i, Compare) and i.op is Op.EQ:
            key = (i.field, lq.literal_index_value(i.value)[0] if i.field.system is None else "")
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(i)
        else:
            order.append(i)
    return [_compare(groups[k], namespace, args) if isinstance(k, tuple) else _sql(k, namespace, args)
            for k in order]


def _compare(cs: list[Compare], namespace: str, args: list[object]) -> str:
    """One comparison, or several equalities on the same field (and literal kind) as one IN."""
    c = cs[0]
    if len(cs) == 1:
        test = f"{c.op.value} ?"
    else:
        test = "IN (" + ", ".join("?" * len(cs)) + ")"
    s = c.field.system
    if s is None:
        kind = lq.literal_index_value(c.value)[0]
        args.extend([namespace, c.field.name, kind, *(lq.literal_index_value(x.value)[1] for x in cs)])
        return _SA_MATCH.format(test=test)
    args.extend(x.value for x in cs)
    if s is SystemField.CLOSE_TIME:  # an open run has no close time (stored as 0)
        return f"(close_time_ms > 0 AND close_time_ms {test})"
    return f"{_COLUMNS[s]} {test}"


_UPSERT = (
    "INSERT INTO visibility (namespace, run_id, workflow_id, workflow_type, task_queue, status, "
    "start_time_ms, close_time_ms, history_length, memo, search_attributes) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (namespace, run_id) DO UPDATE SET workflow_id = excluded.workflow_id, "
    "workflow_type = excluded.workflow_type, task_queue = excluded.task_queue, status = excluded.status, "
    "start_time_ms = excluded.start_time_ms, close_time_ms = excluded.close_time_ms, "
    "history_length = excluded.history_length, memo = excluded.memo, "
    "search_attributes = excluded.search_attributes "
    # A record never goes back: an older snapshot (shorter history) arriving late is ignored.
    "WHERE excluded.history_length >= visibility.history_length")
_DELETE_SA = "DELETE FROM visibility_search_attributes WHERE namespace = ? AND run_id = ?"
_INSERT_SA = ("INSERT OR IGNORE INTO visibility_search_attributes (namespace, run_id, name, kind, value) "
              "VALUES (?, ?, ?, ?, ?)")
_SELECT = ("SELECT namespace, run_id, workflow_id, workflow_type, task_queue, status, start_time_ms, "
           "close_time_ms, history_length, memo, search_attributes FROM visibility WHERE ")

_MAX_BATCH = 512
_Row = tuple[str, str, str, str, str, str, int, int, int, str, str]
_SaRow = tuple[str, str, str, str, str | int | float]


def _sa_rows(namespace: str, run_id: str, attrs: object) -> list[_SaRow]:
    if not isinstance(attrs, dict):
        return []
    return [(namespace, run_id, str(name), kind, value)
            for name, v in attrs.items() for kind, value in lq.index_values(v)]


def _info(r: tuple[Any, ...]) -> WorkflowExecutionInfo:
    return info_from_columns(*r)


class SqliteVisibilityStore:
    """`legato.api.VisibilityStore` in the SqliteStore's database (same file; reads on its reading thread).

    Upserts that arrive together are written in one transaction (one hop to the database thread);
    each `upsert` returns once its row is committed."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._pending: list[tuple[tuple[_Row, list[_SaRow]], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._indexed = False  # read and set on the event loop's thread only

    # ------------------------------------------------------------ writing

    async def upsert(self, info: WorkflowExecutionInfo) -> None:
        attrs = info.search_attributes or {}
        row: _Row = (info.namespace, info.run_id, info.workflow_id, info.workflow_type, info.task_queue,
                     WorkflowStatus(info.status).value, info.start_time_ms, info.close_time_ms, info.history_length,
                     codec.dumps(info.memo or {}), codec.dumps(attrs))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((row, _sa_rows(info.namespace, info.run_id, attrs)), fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="visibility-flush")
        await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                await self._store.call(functools.partial(self._write_rows, [r for r, _ in batch]))
            except BaseException as e:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e if isinstance(e, Exception) else Unavailable("visibility write cancelled"))
                        fut.exception()
                if not isinstance(e, Exception):
                    raise
            else:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

    def _write_rows(self, rows: list[tuple[_Row, list[_SaRow]]], c: sqlite3.Connection) -> None:
        self._ensure_index(c)
        c.execute("BEGIN IMMEDIATE")
        for row, sa in rows:
            if c.execute(_UPSERT, row).rowcount > 0:  # 0: an older snapshot, ignored
                c.execute(_DELETE_SA, (row[0], row[1]))
                if sa:
                    c.executemany(_INSERT_SA, sa)
        c.execute("COMMIT")

    async def delete(self, namespace: str, run_id: str, start_time_ms: int) -> None:
        """Retention: the run's row and its search attribute rows, in one transaction. (History
        deletes a run only once its transfer tasks, its last upsert included, are done.)"""
        await self._store.call(functools.partial(self._delete_rows, namespace, run_id))

    @staticmethod
    def _delete_rows(namespace: str, run_id: str, c: sqlite3.Connection) -> None:
        c.execute("BEGIN IMMEDIATE")
        c.execute("DELETE FROM visibility WHERE namespace = ? AND run_id = ?", (namespace, run_id))
        c.execute(_DELETE_SA, (namespace, run_id))
        c.execute("COMMIT")

    def _ensure_index(self, c: sqlite3.Connection) -> None:
        """Fill the search attribute table from the JSON column, once per database (for runs
        recorded before the table existed)."""
        if self._indexed:
            return
        if c.execute("SELECT 1 FROM cluster_metadata WHERE key = ?", (_INDEX_KEY,)).fetchone() is None:
            c.execute("BEGIN IMMEDIATE")
            found = c.execute("SELECT namespace, run_id, search_attributes FROM visibility "
                              "WHERE search_attributes != '{}'").fetchall()
            for ns, run_id, text in found:
                try:
                    attrs = codec.loads(str(text))
                except ValueError:
                    continue
                c.execute(_DELETE_SA, (ns, run_id))
                c.executemany(_INSERT_SA, _sa_rows(str(ns), str(run_id), attrs))
            c.execute("INSERT OR REPLACE INTO cluster_metadata (key, value) VALUES (?, '1')", (_INDEX_KEY,))
            c.execute("COMMIT")
        self._indexed = True

    # ------------------------------------------------------------ reading

    async def _read(self, sql: str, args: list[object]) -> list[tuple[Any, ...]]:
        """On the store's reading thread: a list or count costs more the more runs there are, and
        must not hold up the engine's event loop meanwhile."""
        if not self._indexed:
            await self._store.call(self._ensure_index)

        def read(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return c.execute(sql, args).fetchall()

        return await self._store.read_apart(read)

    async def list(self, req: ListWorkflowsRequest) -> ListWorkflowsResponse:
        namespace = check_namespace(req.namespace, "list workflows")
        q = parse_list_query(req.query)
        size = page_size(req.page_size)
        where, args = compile_where(q.where, namespace)
        desc = q.order_by.descending
        fingerprint = lq.fingerprint(namespace, q)
        if req.next_page_token:
            start, run_id = decode_token(req.next_page_token, fingerprint)
            where += (" AND (start_time_ms < ? OR (start_time_ms = ? AND run_id < ?))" if desc else
                      " AND (start_time_ms > ? OR (start_time_ms = ? AND run_id > ?))")
            args.extend([start, start, run_id])
        order = "DESC" if desc else "ASC"
        rows = await self._read(f"{_SELECT}{where} ORDER BY start_time_ms {order}, run_id {order} LIMIT ?",
                                [*args, size + 1])
        more = len(rows) > size
        out = [_info(r) for r in rows[:size]]
        token = encode_token(out[-1].start_time_ms, out[-1].run_id, fingerprint) if more and out else b""
        return ListWorkflowsResponse(out, token)

    async def count(self, namespace: str, query: str) -> int:
        """How many runs of the namespace match (ORDER BY and GROUP BY are ignored)."""
        where, args = compile_where(lq.parse(query).where, check_namespace(namespace, "count workflows"))
        rows = await self._read(f"SELECT COUNT(*) FROM visibility WHERE {where}", args)
        return int(rows[0][0])

    async def count_by_status(self, namespace: str, query: str) -> dict[WorkflowStatus, int]:
        """How many runs of the namespace match, per status (statuses without any are left out)."""
        where, args = compile_where(lq.parse(query).where, check_namespace(namespace, "count workflows"))
        rows = await self._read(f"SELECT status, COUNT(*) FROM visibility WHERE {where} GROUP BY status", args)
        found = {WorkflowStatus(str(s)): int(n) for s, n in rows}
        return {s: found[s] for s in WorkflowStatus if s in found}
