"""Counting a children run's leaves by status at a cost that does not grow with the run.

A plain `GROUP BY ExecutionStatus` over every leaf reads every leaf's visibility row: on the
cluster one count over a run's 10,000 leaves cost the Cassandra node 0.3 to 2 s of CPU, and the
cost grows with the run (the generator then samples less often, so that its reads stay under
`MAX_SAMPLING_SHARE` of the time, and its progress figures go stale). Leaves only ever close,
and each lives seconds: so the leaves started before some time, once none of them is open, are
counted once and remembered ("frozen", by start time), and each sample reads only the leaves
started since.

The boundary follows the newest leaf start the generator has seen (in its latency samples), less
`FREEZE_MARGIN_MS`; it moves only over leaves that are all closed. A leaf whose visibility row is
written more than the margin after those of leaves started later could be missed by the frozen
count. That is a progress figure only: a finished run's counts are the root's own.
"""

from __future__ import annotations

from collections import Counter

from legato.api import CountWorkflowsRequest, WorkflowService, WorkflowStatus

FREEZE_MARGIN_MS = 15_000  # leaves started this long before the newest one seen may be frozen
_RUNNING = WorkflowStatus.RUNNING.value


async def count_by_status(svc: WorkflowService, query: str) -> dict[str, int]:
    """How many workflows `query` selects, by status value (statuses without any left out)."""
    r = await svc.count_workflows(CountWorkflowsRequest(query=query + " GROUP BY ExecutionStatus"))
    return {g.value: g.count for g in r.groups}


class LeafCounts:
    """Counts by status value of the leaves `query` selects (a query without ORDER BY or GROUP BY)."""

    def __init__(self, svc: WorkflowService, query: str, margin_ms: int = FREEZE_MARGIN_MS) -> None:
        self._svc = svc
        self._query = query
        self._margin_ms = margin_ms
        self._frozen: Counter[str] = Counter()  # leaves started before `frozen_before`: all closed
        self.frozen_before = 0  # a start time (ms); 0: nothing frozen yet

    async def counts(self, newest_start_ms: int = 0) -> dict[str, int]:
        """The counts now; `newest_start_ms`: the latest start time of a leaf seen so far (0: none)."""
        await self._freeze(newest_start_ms - self._margin_ms)
        recent = await self._count(self._started(self.frozen_before))
        return dict(self._frozen + Counter(recent))

    def _started(self, from_ms: int, before_ms: int = 0) -> str:
        q = self._query
        if from_ms:
            q += f" AND StartTime >= {from_ms}"
        if before_ms:
            q += f" AND StartTime < {before_ms}"
        return q

    async def _count(self, query: str) -> dict[str, int]:
        return await count_by_status(self._svc, query)

    async def _freeze(self, before_ms: int) -> None:
        """Move the boundary up to `before_ms` if every leaf it passes is closed."""
        if before_ms <= self.frozen_before:
            return
        passed = await self._count(self._started(self.frozen_before, before_ms))
        if passed.get(_RUNNING):  # one of them still runs (a slow or stuck leaf): not settled yet
            return
        self._frozen.update(passed)
        self.frozen_before = before_ms
