"""Writes of one statement that arrive together, sent together: one unlogged batch per partition.

Cassandra spends most of a small write's CPU on the request around it (measured with
`legato bench cassandra-cost`: a visibility upsert alone cost about 270 µs of the node's CPU), and
the visibility records of a namespace's runs of one day share a partition, so the upserts that
queue while one request is in flight go in the next one, one single-partition batch (one
mutation) per partition, as group commit does for the shard's writes. Nothing waits to fill a
batch: a write that finds nothing in flight is sent at once. Each write keeps its own values,
its own `USING TIMESTAMP` among them; a batch applies them all or, if the request fails, the
failure is every caller's (the writes are idempotent upserts: the caller may simply retry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from cassandra.query import BatchStatement, BatchType

from history.store.cql import Cql

BATCH_ROWS = 50  # writes in one batch, at most (about 25 KB of visibility records)

_Pending = tuple[Hashable, list[Any], "asyncio.Future[None]"]


class PartitionBatcher:
    """Sends `text` (a prepared INSERT or UPDATE) with each write's values, batching the writes
    of one partition that are waiting while a request is in flight. `kind` labels the requests
    in `Cql.stats`."""

    def __init__(self, cql: Cql, text: str, kind: str, max_rows: int = BATCH_ROWS) -> None:
        self._cql = cql
        self._text = text
        self._kind = kind
        self._max_rows = max_rows
        self._pending: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None

    async def write(self, partition: Hashable, values: list[Any]) -> None:
        """Write `values` (of a row in `partition`); returns once Cassandra has it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((partition, values, fut))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="visibility-batcher")
        await fut

    async def _send(self) -> None:
        taken: list[_Pending] = []
        try:
            while self._pending:
                taken, self._pending = self._pending, []
                try:
                    ps = await self._cql.prepare_async(self._text)
                    requests = self._requests(ps, taken)
                except Exception as e:  # values the driver refuses: every caller of the batch hears it
                    _settle([f for _, _, f in taken], e)
                    continue
                results = await asyncio.gather(*(self._cql.execute(r, kind=self._kind) for r, _ in requests),
                                               return_exceptions=True)
                for (_, futs), res in zip(requests, results, strict=True):
                    _settle(futs, res if isinstance(res, BaseException) else None)
        except BaseException as e:  # cancelled: never leave a caller waiting
            _settle([f for _, _, f in taken + self._pending], e)
            self._pending = []
            raise

    def _requests(self, ps: Any, taken: list[_Pending]) -> list[tuple[Any, list[asyncio.Future[None]]]]:
        """One request per partition and `max_rows` writes: a lone write as it is, more as an
        unlogged single-partition batch."""
        groups: dict[Hashable, list[_Pending]] = {}
        for item in taken:
            groups.setdefault(item[0], []).append(item)
        out: list[tuple[Any, list[asyncio.Future[None]]]] = []
        for items in groups.values():
            for i in range(0, len(items), self._max_rows):
                chunk = items[i:i + self._max_rows]
                if len(chunk) == 1:
                    out.append((ps.bind(chunk[0][1]), [chunk[0][2]]))
                    continue
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                batch.is_idempotent = True
                for _, values, _ in chunk:
                    batch.add(ps, values)
                out.append((batch, [f for _, _, f in chunk]))
        return out


def _settle(futs: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in futs:
        if fut.done():  # its caller was cancelled
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
