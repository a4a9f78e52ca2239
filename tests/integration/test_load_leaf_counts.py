"""`legato load children` counts its leaves without reading every leaf at every sample
(legato/load/leaf_counts.py): leaves started before the newest start seen (less a margin, 0
here), once all closed, are counted once and frozen; later samples read only the leaves started
since. Against the embedded engine on a real SQLite file; leaves are workflows nobody runs,
closed by terminating them, so the test decides which are open."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from legato.api import (
    CountWorkflowsRequest,
    ExecutionRef,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowService,
)
from legato.config import Config
from legato.load.leaf_counts import LeafCounts
from legato.server import Engine
from tests.integration.test_cluster_faults import eventually

LEAF = "load:leaf"
RUN = "load-children-test"
QUERY = f"WorkflowType = '{LEAF}' AND WorkflowId >= '{RUN}-' AND WorkflowId < '{RUN}.'"


class Queries:
    """The frontend, recording the queries of the counts asked of it."""

    def __init__(self, inner: WorkflowService) -> None:
        self.inner = inner
        self.counted: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def count_workflows(self, req: CountWorkflowsRequest) -> Any:
        self.counted.append(req.query)
        return await self.inner.count_workflows(req)


async def _all_counts(svc: WorkflowService) -> dict[str, int]:
    r = await svc.count_workflows(CountWorkflowsRequest(query=QUERY + " GROUP BY ExecutionStatus"))
    return {g.value: g.count for g in r.groups}


async def _until_visible(svc: WorkflowService, want: dict[str, int]) -> None:
    """Visibility is written just after each change: wait until it shows `want`."""

    async def shows() -> bool:
        return await _all_counts(svc) == want

    await eventually(shows, f"visibility's leaf counts to be {want}")


async def _start_ms(svc: WorkflowService, wid: str) -> int:
    return (await svc.describe_workflow(ExecutionRef(wid))).info.start_time_ms


async def test_settled_leaves_are_counted_once_and_the_counts_stay_exact(tmp_path: Path) -> None:
    async with Engine(Config(), str(tmp_path / "db.sqlite")) as engine:
        svc = engine.frontend
        leaves = [f"{RUN}-leaf-{i:02d}" for i in range(12)]
        for wid in [*leaves[:10], f"{RUN}.other-run-leaf"]:  # (the last: outside the run's id range)
            await svc.start_workflow(StartWorkflowRequest(wid, LEAF, "nobody-polls"))
        for wid in leaves[:6]:
            await svc.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(wid)))
        await _until_visible(svc, {"RUNNING": 4, "TERMINATED": 6})

        spy = Queries(svc)
        counts = LeafCounts(spy, QUERY, margin_ms=0)  # type: ignore[arg-type]
        assert await counts.counts() == {"RUNNING": 4, "TERMINATED": 6}
        assert counts.frozen_before == 0  # no leaf start seen yet: nothing frozen
        boundary = await _start_ms(svc, leaves[6])
        assert await counts.counts(boundary) == {"RUNNING": 4, "TERMINATED": 6}
        assert counts.frozen_before == boundary  # the leaves started before leaf 6 are all closed
        # A boundary past an open leaf does not move: leaf 7 still runs.
        assert await counts.counts(await _start_ms(svc, leaves[9]) + 1) == {"RUNNING": 4, "TERMINATED": 6}
        assert counts.frozen_before == boundary

        for wid in leaves[6:10]:
            await svc.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(wid)))
        for wid in leaves[10:]:
            await svc.start_workflow(StartWorkflowRequest(wid, LEAF, "nobody-polls"))
        await _until_visible(svc, {"RUNNING": 2, "TERMINATED": 10})
        spy.counted.clear()
        later = await _start_ms(svc, leaves[10])
        assert await counts.counts(later) == {"RUNNING": 2, "TERMINATED": 10}
        assert counts.frozen_before == later
        # every count read only leaves started at or after the first boundary
        lows = [re.findall(r"StartTime >= (\d+)", q) for q in spy.counted]
        assert spy.counted and all(len(low) == 1 and int(low[0]) >= boundary for low in lows), spy.counted

        for wid in leaves[10:]:
            await svc.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(wid)))
        await _until_visible(svc, {"TERMINATED": 12})
        assert await counts.counts(later) == {"TERMINATED": 12}
