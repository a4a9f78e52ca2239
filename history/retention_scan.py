"""The retention scan: closed runs that no retention timer will delete are found and deleted.

Retention deletes a run through the `delete_history` timer its close writes (history/engine.py).
A run closed before retention existed, or while `history.retention` was 0 (kept for ever) and
changed since, has no such timer and would be kept for ever. So each shard's owner walks the
shard's run rows (`ExecutionStore.scan_runs`, in key order) every `history.retention_scan_interval`
and deletes every closed run whose retention has passed by more than
`history.retention_scan_grace` (a run whose timer is merely late is left to its timer), the way
its timer would (`delete` is HistoryServiceImpl.delete_closed_run: under the workflow's lock,
fenced by the shard's range_id, idempotent).

* Paced: at most `history.retention_scan_rate` runs examined per second per shard.
* Resumable: after each page the position is written to the cluster metadata (key
  `retention_scan.<shard>`), so a restarted or new owner carries on where the last one stopped;
  it is advisory (two owners scanning at once during a handover only repeat work: deleting is
  idempotent and fenced), so it is a plain write.
* Reported: each finished pass logs what it examined and deleted; `legato_retention_scan_runs_total`
  counts runs by outcome.

On Cassandra the runs' slice of the shard's partition holds the tombstones of the runs retention
deleted in the last `gc_grace_seconds`, which each page's read crosses; a pass is a background
read at a bounded rate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from history.state import MutableState
from history.store.base import ExecutionStore, RunRow
from legato import metrics
from legato.config import HistoryConfig
from legato.errors import ServiceError, ShardOwnershipLost

log = logging.getLogger("legato.history")

SCAN_PAGE = 100  # run rows read per request
RETRY_S = 30.0  # a pass that failed (the store unavailable) starts again this long after
CURSOR_KEY = "retention_scan.{shard}"  # the cluster metadata key of a shard's scan position
_RUNS = metrics.children(metrics.retention_scan_runs)

# (namespace, workflow_id, run_id, start_time_ms) -> whether the run was deleted (False: it was open)
DeleteRun = Callable[[str, str, str, int], Awaitable[bool]]


@dataclass
class ScanPosition:
    """Where a shard's scan is: `after` the last run key examined (None: a pass starts at the
    first), `passed_ms` when the last pass ended (0: never)."""

    after: tuple[str, str, str] | None = None
    passed_ms: int = 0

    def encode(self) -> str:
        return json.dumps({"after": list(self.after) if self.after else None, "passed_ms": self.passed_ms})

    @staticmethod
    def decode(text: str | None) -> ScanPosition:
        if not text:
            return ScanPosition()
        try:
            d = json.loads(text)
            after = d.get("after")
            return ScanPosition(tuple(after) if after else None, int(d.get("passed_ms", 0)))
        except (ValueError, TypeError, AttributeError):
            log.warning("retention scan: unreadable position %r, starting a pass from the first run", text)
            return ScanPosition()


@dataclass
class PassSummary:
    examined: int = 0
    deleted: int = 0


class RetentionScan:
    """The retention scan of one shard (its owner runs `run` while it owns the shard)."""

    def __init__(self, shard_id: int, store: ExecutionStore, config: HistoryConfig, clock: Callable[[], int],
                 delete: DeleteRun) -> None:
        self.shard_id = shard_id
        self._store = store
        self._config = config
        self._clock = clock
        self._delete = delete
        self._key = CURSOR_KEY.format(shard=shard_id)

    async def run(self) -> None:
        """Passes for ever, each `retention_scan_interval` after the last one ended; stops when
        the shard is lost (the caller cancels it when it stops)."""
        while True:
            pos = ScanPosition.decode(await self._store.get_metadata(self._key))
            due = pos.passed_ms + self._config.retention_scan_interval if pos.after is None else 0
            wait_ms = due - self._clock()
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)  # the next pass's time, not a wait for anything
                continue
            try:
                summary = await self.one_pass(pos)
            except ShardOwnershipLost:
                return
            except ServiceError as e:
                log.warning("shard %d: retention scan stopped (%s); it resumes in %.0fs", self.shard_id, e, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            log.info("shard %d: retention scan examined %d runs, deleted %d closed runs past their retention",
                     self.shard_id, summary.examined, summary.deleted)

    async def one_pass(self, pos: ScanPosition) -> PassSummary:
        """Examine every run of the shard from `pos` on, writing the position after each page."""
        summary = PassSummary()
        after = pos.after
        rate = self._config.retention_scan_rate
        while True:
            started = time.monotonic()
            rows = await self._store.scan_runs(self.shard_id, after, SCAN_PAGE)
            for row in rows:
                summary.examined += 1
                deleted = await self._examine(row)
                summary.deleted += deleted
                _RUNS("deleted" if deleted else "kept").inc()
            if len(rows) < SCAN_PAGE:
                await self._store.put_metadata(self._key, ScanPosition(None, self._clock()).encode())
                return summary
            after = (rows[-1].namespace, rows[-1].workflow_id, rows[-1].run_id)
            await self._store.put_metadata(self._key, ScanPosition(after, pos.passed_ms).encode())
            pace = len(rows) / rate - (time.monotonic() - started)
            if pace > 0:
                await asyncio.sleep(pace)  # the rate limit

    async def _examine(self, row: RunRow) -> bool:
        """Delete the run if it is closed and its retention (plus the grace) has passed."""
        st = MutableState.decode(row.state)
        retention = self._config.retention_ms(st.namespace)
        if st.running or retention <= 0:
            return False
        if st.close_time_ms + retention + self._config.retention_scan_grace > self._clock():
            return False
        return await self._delete(row.namespace, row.workflow_id, row.run_id, st.start_time_ms)
