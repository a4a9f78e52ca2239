"""Visibility on SQLite: one row per run, listed newest first, paged with an opaque token.

Query language for now: empty (everything), or `Field = 'value'` clauses joined by AND over
WorkflowType, ExecutionStatus and WorkflowId. Anything else is refused with InvalidArgument.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from history.store.sqlite import SqliteStore
from legato import codec
from legato.api import ListWorkflowsRequest, ListWorkflowsResponse, WorkflowExecutionInfo, WorkflowStatus
from legato.errors import InvalidArgument, Unavailable

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_FIELDS = {"WorkflowType": "workflow_type", "ExecutionStatus": "status", "WorkflowId": "workflow_id"}
_SUPPORTED = ("empty (all runs), or Field = 'value' clauses joined by AND, where Field is one of "
              + ", ".join(_FIELDS))
_TOKEN = re.compile(r"""\s*(?:(?P<and>AND\b)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<eq>=)|'(?P<sq>(?:[^']|'')*)'"""
                    r'''|"(?P<dq>(?:[^"]|"")*)"|(?P<other>\S))''', re.IGNORECASE)
_STATUS = {s.value.replace("_", ""): s.value for s in WorkflowStatus}


@dataclass(slots=True)
class Filter:
    column: str
    value: str


def parse_query(query: str) -> list[Filter]:
    """Parse the (for now small) visibility query language into column filters."""
    if not isinstance(query, str):
        raise InvalidArgument("list workflows: query must be a string")
    text = query.strip()
    if not text:
        return []
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace left
            break
        pos = m.end()
        kind = m.lastgroup or ""
        if kind == "other":
            raise InvalidArgument(f"list workflows: unsupported query {query!r}: unexpected {m.group('other')!r} "
                                  f"at position {m.start('other') + 1}; supported for now: {_SUPPORTED}")
        if kind == "sq":
            tokens.append(("str", m.group("sq").replace("''", "'")))
        elif kind == "dq":
            tokens.append(("str", m.group("dq").replace('""', '"')))
        else:
            tokens.append((kind, m.group(kind)))
    filters: list[Filter] = []
    i = 0
    while True:
        clause = tokens[i:i + 3]
        if len(clause) < 3 or clause[0][0] != "ident" or clause[1][0] != "eq" or clause[2][0] != "str":
            raise InvalidArgument(f"list workflows: unsupported query {query!r}: expected Field = 'value' at clause "
                                  f"{len(filters) + 1}; supported for now: {_SUPPORTED}")
        name, value = clause[0][1], clause[2][1]
        column = _FIELDS.get(name)
        if column is None:
            raise InvalidArgument(f"list workflows: unsupported query field {name!r} in {query!r}; supported for "
                                  f"now: {', '.join(_FIELDS)}")
        if column == "status":
            norm = _STATUS.get(value.replace("_", "").upper())
            if norm is None:
                raise InvalidArgument(f"list workflows: unknown ExecutionStatus {value!r} (use one of "
                                      f"{', '.join(s.value for s in WorkflowStatus)})")
            value = norm
        filters.append(Filter(column, value))
        i += 3
        if i == len(tokens):
            return filters
        if tokens[i][0] != "and":
            raise InvalidArgument(f"list workflows: unsupported query {query!r}: expected AND after clause "
                                  f"{len(filters)}, got {tokens[i][1]!r}; supported for now: {_SUPPORTED}")
        i += 1


def _encode_token(start_time_ms: int, run_id: str) -> bytes:
    return base64.urlsafe_b64encode(codec.dumps([start_time_ms, run_id]).encode())


def _decode_token(raw: bytes) -> tuple[int, str]:
    try:
        start, run_id = codec.loads(base64.urlsafe_b64decode(raw))
        if not isinstance(start, int) or not isinstance(run_id, str):
            raise ValueError("wrong types")
        return start, run_id
    except Exception as e:
        raise InvalidArgument(f"list workflows: malformed next_page_token ({e})") from None


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

_MAX_BATCH = 512
_Row = tuple[str, str, str, str, str, str, int, int, int, str, str]


def _write_rows(rows: list[_Row], c: sqlite3.Connection) -> None:
    c.execute("BEGIN IMMEDIATE")
    c.executemany(_UPSERT, rows)
    c.execute("COMMIT")


class SqliteVisibilityStore:
    """`legato.api.VisibilityStore` in the SqliteStore's database (same file, same thread).

    Upserts that arrive together are written in one transaction (one hop to the database thread);
    each `upsert` returns once its row is committed."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._pending: list[tuple[_Row, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def upsert(self, info: WorkflowExecutionInfo) -> None:
        row: _Row = (info.namespace, info.run_id, info.workflow_id, info.workflow_type, info.task_queue,
                     WorkflowStatus(info.status).value, info.start_time_ms, info.close_time_ms, info.history_length,
                     codec.dumps(info.memo or {}), codec.dumps(info.search_attributes or {}))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="visibility-flush")
        await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                await self._store.call(functools.partial(_write_rows, [r for r, _ in batch]))
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

    async def list(self, req: ListWorkflowsRequest) -> ListWorkflowsResponse:
        if not isinstance(req.namespace, str) or not req.namespace:
            raise InvalidArgument("list workflows: namespace must be a non-empty string")
        filters = parse_query(req.query)
        size = req.page_size if isinstance(req.page_size, int) and req.page_size > 0 else DEFAULT_PAGE_SIZE
        size = min(size, MAX_PAGE_SIZE)
        where = ["namespace = ?"]
        args: list[object] = [req.namespace]
        for f in filters:
            where.append(f"{f.column} = ?")
            args.append(f.value)
        if req.next_page_token:
            start, run_id = _decode_token(req.next_page_token)
            where.append("(start_time_ms < ? OR (start_time_ms = ? AND run_id < ?))")
            args.extend([start, start, run_id])
        sql = ("SELECT namespace, run_id, workflow_id, workflow_type, task_queue, status, start_time_ms, "
               "close_time_ms, history_length, memo, search_attributes FROM visibility WHERE "
               + " AND ".join(where) + " ORDER BY start_time_ms DESC, run_id DESC LIMIT ?")
        args.append(size + 1)

        def read(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return c.execute(sql, args).fetchall()

        rows = await self._store.call(read)
        more = len(rows) > size
        rows = rows[:size]
        out = [WorkflowExecutionInfo(
            namespace=str(r[0]), run_id=str(r[1]), workflow_id=str(r[2]), workflow_type=str(r[3]),
            task_queue=str(r[4]), status=WorkflowStatus(str(r[5])), start_time_ms=int(r[6]),
            close_time_ms=int(r[7]), history_length=int(r[8]),
            memo=codec.loads(str(r[9])), search_attributes=codec.loads(str(r[10]))) for r in rows]
        token = _encode_token(out[-1].start_time_ms, out[-1].run_id) if more and out else b""
        return ListWorkflowsResponse(out, token)
