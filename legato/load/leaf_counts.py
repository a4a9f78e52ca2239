"""Counting a children run's leaves by status at a cost that does not grow with the run.

A plain `GROUP BY ExecutionStatus` over every leaf reads every leaf's visibility row: on the
cluster each sample of a 10,000-children run cost the Cassandra node about 0.36 s of CPU, and a
sample's cost grows with the run (the generator then samples less often, so that its reads stay
under `MAX_SAMPLING_SHARE` of the time, but the node's CPU per child measured beside it still
carries them). Leaves only ever close, and they start in order: every leaf that started well
before the oldest one still open is closed for good. So those are counted once and remembered
("frozen", by start time), and each sample reads only the leaves started since.

A leaf whose visibility row is written more than `FREEZE_MARGIN_MS` after those of leaves
started later could be missed by the frozen count. That is a progress figure only: a finished
run's counts are the root's own.
"""

from __future__ import annotations

from collections import Counter

from legato.api import CountWorkflowsRequest, ListWorkflowsRequest, WorkflowService, WorkflowStatus

FREEZE_MARGIN_MS = 60_000  # leaves started this long before the oldest open one count as settled
_RUNNING = WorkflowStatus.RUNNING.value


class LeafCounts:
    """Counts by status value of the leaves `query` selects (a query without ORDER BY or GROUP BY)."""

    def __init__(self, svc: WorkflowService, query: str, margin_ms: int = FREEZE_MARGIN_MS) -> None:
        self._svc = svc
        self._query = query
        self._margin_ms = margin_ms
        self._frozen: Counter[str] = Counter()  # leaves started before `frozen_before`: all closed
        self.frozen_before = 0  # a start time (ms); 0: nothing frozen yet

    async def counts(self) -> dict[str, int]:
        await self._freeze_settled()
        recent = await self._count(self._since(self.frozen_before))
        return dict(self._frozen + Counter(recent))

    def _since(self, start_ms: int, until_ms: int = 0) -> str:
        q = self._query
        if start_ms:
            q += f" AND StartTime >= {start_ms}"
        if until_ms:
            q += f" AND StartTime < {until_ms}"
        return q

    async def _count(self, query: str) -> dict[str, int]:
        r = await self._svc.count_workflows(CountWorkflowsRequest(query=query + " GROUP BY ExecutionStatus"))
        return {g.value: g.count for g in r.groups}

    async def _freeze_settled(self) -> None:
        """Move the frozen boundary up to the margin before the oldest open leaf, counting the
        leaves it passes; not at all while no leaf is open (the run is starting or ending)."""
        page = await self._svc.list_workflows(ListWorkflowsRequest(
            query=f"{self._since(self.frozen_before)} AND ExecutionStatus = '{_RUNNING}' ORDER BY StartTime ASC",
            page_size=1))
        if not page.executions:
            return
        before = page.executions[0].start_time_ms - self._margin_ms
        if before <= self.frozen_before:
            return
        passed = await self._count(self._since(self.frozen_before, before))
        if passed.get(_RUNNING):  # one became visible meanwhile: not settled after all
            return
        self._frozen.update(passed)
        self.frozen_before = before
